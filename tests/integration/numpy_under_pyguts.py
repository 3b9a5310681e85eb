"""pytest plugin (``-p numpy_under_pyguts``): every test runs once under each pyguts handler.

Used by test_alloc_numpy_suite.py to run numpy's own NEP 49 tests (``test_mem_policy.py``) with a
pyguts handler as the one in force, the way a user's ``with pyguts.alloc.use(...)`` block would.
"""

import numpy as np
import pytest

from pyguts import alloc


@pytest.fixture(autouse=True, params=alloc.available())
def pyguts_handler(request):
    with alloc.use(request.param):
        assert np._core.multiarray.get_handler_name() == f"pyguts-{request.param}"
        yield request.param
