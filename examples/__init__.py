"""The teaching notebook's sections, one script each: installed as ``pyguts.tour.examples``, run by ``pyguts tour``."""
