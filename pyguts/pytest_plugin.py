"""pytest plugin for pyguts (registered through the ``pytest11`` entry point; inert unless asked)."""
