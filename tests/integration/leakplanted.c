/* A reference leaked on an object the caller never names, for pyguts.leaks (issue 15).
 *
 * Built by tests/integration/test_leaks_realistic.py (and benchmarks/leaks_verdicts.py) with
 *   gcc -shared -fPIC -O1 -I<include> leakplanted.c -o leakplanted<EXT_SUFFIX>
 * Modelled on the leak pyguts missed in a published C extension: a compiled pattern kept in a
 * module-level cache (like re's _cache) gets one reference per call that is never given back. The
 * caller passes only a key string and a text; the leaking object lives in the cache alone.
 * The cached "compiled" objects are lists (gc-tracked, mortal on every CPython, like re.Pattern).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* key (str) -> compiled (list [key, len(key)]); also the module attribute _cache. */
static PyObject *cache;

/* The cached object for key, a borrowed reference (created and stored on first use), or NULL. */
static PyObject *lookup(PyObject *key) {
    PyObject *compiled = PyDict_GetItemWithError(cache, key);
    if (compiled != NULL || PyErr_Occurred()) return compiled;
    compiled = Py_BuildValue("[On]", key, PyUnicode_GET_LENGTH(key));
    if (compiled == NULL) return NULL;
    if (PyDict_SetItem(cache, key, compiled) < 0) {
        Py_DECREF(compiled);
        return NULL;
    }
    Py_DECREF(compiled);   /* the cache holds it */
    return compiled;
}

static PyObject *search(PyObject *args, int leak) {
    PyObject *key, *text, *compiled;
    Py_ssize_t found;
    if (!PyArg_ParseTuple(args, "UU", &key, &text)) return NULL;
    compiled = lookup(key);
    if (compiled == NULL) return NULL;
    Py_INCREF(compiled);   /* held while matching */
    found = PyUnicode_Find(text, PyList_GET_ITEM(compiled, 0), 0, PyUnicode_GET_LENGTH(text), 1);
    if (!leak) Py_DECREF(compiled);   /* the leaking twin forgets this */
    if (found == -2) return NULL;
    return PyBool_FromLong(found >= 0);
}

static PyObject *cached_search_leaking(PyObject *self, PyObject *args) { return search(args, 1); }
static PyObject *cached_search(PyObject *self, PyObject *args) { return search(args, 0); }

static PyMethodDef methods[] = {
    {"cached_search_leaking", cached_search_leaking, METH_VARARGS,
     "cached_search_leaking(key, text): like cached_search, and leaks a reference to the cached object."},
    {"cached_search", cached_search, METH_VARARGS,
     "cached_search(key, text): is key in text, through an object cached per key in _cache."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "leakplanted", "A reference leak on an unnamed cached object.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_leakplanted(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (cache == NULL && (cache = PyDict_New()) == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(cache);
    if (PyModule_AddObject(m, "_cache", cache) < 0) {
        Py_DECREF(cache);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
