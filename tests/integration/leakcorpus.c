/* Planted refcount and memory leaks for pyguts.leaks (issue 7), plus clean controls.
 *
 * Built by tests/integration/test_leaks_corpus.py with
 *   gcc -shared -fPIC -O1 -I<include> leakcorpus.c -o leakcorpus<EXT_SUFFIX>
 * Every leak_* function leaks one thing per call; every clean_* function leaks nothing.
 * On 3.12+ small ints, interned strings and None are immortal (their refcount never moves), so the
 * planted objects are fresh: large ints, formatted strings, new containers, a caller's object.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LARGE_BUFFER_NBYTES (256 * 1024)
#define RAW_MALLOC_NBYTES 1024

static long counter;
/* Keeps the compiler from eliding malloc+memset of a block nobody reads (it does at -O1). */
static void *volatile last_raw_block;

/* A reference to an existing object taken and never given back. */
static PyObject *leak_incref_arg(PyObject *self, PyObject *arg) {
    Py_INCREF(arg);
    Py_RETURN_NONE;
}

static PyObject *leak_list(PyObject *self, PyObject *unused) {
    PyObject *list = PyList_New(0);
    if (list == NULL) return NULL;
    Py_RETURN_NONE;   /* list never released */
}

/* A dict holding a list, so that gc tracks it (an empty dict or one of atoms stays untracked). */
static PyObject *leak_dict(PyObject *self, PyObject *unused) {
    PyObject *dict = PyDict_New(), *item = PyList_New(0);
    if (dict == NULL || item == NULL) return NULL;
    if (PyDict_SetItemString(dict, "item", item) < 0) return NULL;
    Py_DECREF(item);
    Py_RETURN_NONE;   /* dict never released */
}

static PyObject *leak_tuple(PyObject *self, PyObject *unused) {
    PyObject *item = PyList_New(0), *tuple;
    if (item == NULL) return NULL;
    tuple = PyTuple_Pack(1, item);
    Py_DECREF(item);
    if (tuple == NULL) return NULL;
    Py_RETURN_NONE;   /* tuple never released */
}

static PyObject *leak_int(PyObject *self, PyObject *unused) {
    if (PyLong_FromLong(1000000 + counter++) == NULL) return NULL;   /* not a small (immortal) int */
    Py_RETURN_NONE;
}

static PyObject *leak_bytes(PyObject *self, PyObject *unused) {
    if (PyBytes_FromStringAndSize("forty bytes of leaked payload, per call.", 40) == NULL) return NULL;
    Py_RETURN_NONE;
}

static PyObject *leak_str(PyObject *self, PyObject *unused) {
    if (PyUnicode_FromFormat("leaked string number %ld", counter++) == NULL) return NULL;   /* not interned */
    Py_RETURN_NONE;
}

static PyObject *leak_large_buffer(PyObject *self, PyObject *unused) {
    PyObject *buffer = PyBytes_FromStringAndSize(NULL, LARGE_BUFFER_NBYTES);
    if (buffer == NULL) return NULL;
    memset(PyBytes_AS_STRING(buffer), 0x5a, LARGE_BUFFER_NBYTES);
    Py_RETURN_NONE;   /* 256 KiB bytes object never released */
}

static PyObject *leak_raw_malloc(PyObject *self, PyObject *unused) {
    void *block = malloc(RAW_MALLOC_NBYTES);
    if (block == NULL) return PyErr_NoMemory();
    memset(block, 0x5a, RAW_MALLOC_NBYTES);
    last_raw_block = block;   /* overwritten next call: the previous block is lost */
    Py_RETURN_NONE;
}

static PyObject *leak_fd(PyObject *self, PyObject *unused) {
    int fd = open("/dev/null", O_RDONLY);
    if (fd < 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(fd);   /* fd never closed */
}

/* Controls: the same work, with every reference, block and fd given back. */
static PyObject *clean_incref_arg(PyObject *self, PyObject *arg) {
    Py_INCREF(arg);
    Py_DECREF(arg);
    Py_RETURN_NONE;
}

static PyObject *clean_containers(PyObject *self, PyObject *unused) {
    PyObject *list = PyList_New(0), *dict = PyDict_New();
    Py_XDECREF(list);
    Py_XDECREF(dict);
    return PyLong_FromLong(1000000 + counter++);   /* returned to the caller, who drops it */
}

static PyObject *clean_raw_malloc(PyObject *self, PyObject *unused) {
    void *block = malloc(RAW_MALLOC_NBYTES);
    if (block == NULL) return PyErr_NoMemory();
    memset(block, 0x5a, RAW_MALLOC_NBYTES);
    last_raw_block = block;
    free(block);
    last_raw_block = NULL;
    Py_RETURN_NONE;
}

static PyObject *clean_fd(PyObject *self, PyObject *unused) {
    int fd = open("/dev/null", O_RDONLY);
    if (fd < 0) return PyErr_SetFromErrno(PyExc_OSError);
    close(fd);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"leak_incref_arg", leak_incref_arg, METH_O, "Py_INCREF(arg) without Py_DECREF."},
    {"leak_list", leak_list, METH_NOARGS, "A new list never released."},
    {"leak_dict", leak_dict, METH_NOARGS, "A new dict (holding a list) never released."},
    {"leak_tuple", leak_tuple, METH_NOARGS, "A new tuple (holding a list) never released."},
    {"leak_int", leak_int, METH_NOARGS, "A new large int never released."},
    {"leak_bytes", leak_bytes, METH_NOARGS, "A new 40-byte bytes never released."},
    {"leak_str", leak_str, METH_NOARGS, "A new str never released."},
    {"leak_large_buffer", leak_large_buffer, METH_NOARGS, "A 256 KiB bytes never released."},
    {"leak_raw_malloc", leak_raw_malloc, METH_NOARGS, "malloc(1024) without free."},
    {"leak_fd", leak_fd, METH_NOARGS, "open() without close()."},
    {"clean_incref_arg", clean_incref_arg, METH_O, "Py_INCREF(arg) then Py_DECREF(arg)."},
    {"clean_containers", clean_containers, METH_NOARGS, "New list and dict released; a new int returned."},
    {"clean_raw_malloc", clean_raw_malloc, METH_NOARGS, "malloc(1024) then free."},
    {"clean_fd", clean_fd, METH_NOARGS, "open() then close()."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "leakcorpus", "Planted leaks for pyguts.leaks.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_leakcorpus(void) { return PyModule_Create(&module); }
