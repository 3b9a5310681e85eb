/* numpy arrays over memory pyguts already checked, made in C (pyguts/_ndarray.py builds this).
 *
 * Python's own way (an object with __array_interface__, then numpy.asarray) parses a dict per
 * array: ~1.5 us. Here one call makes the array with PyArray_NewFromDescr over the given address and
 * sets its base: ~0.15 us. Nothing here checks the memory; the Python callers did.
 *
 * cffi compiles this in API mode, and cffi releases the GIL around every call of a cdef'd function,
 * so the one cdef'd function, pg_nd_functions, takes it back before touching any object. The
 * Python-level functions it hands out are ordinary builtins: called with the GIL held.
 */
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <structmember.h>
#include <stdint.h>

/* What keeps a viewed object alive: the array's .base (pyguts.objects.memory.kept_alive finds it). */
typedef struct {
    PyObject_HEAD
    PyObject *owner;
    void *addr;
    int readonly;
} Holder;

static int holder_traverse(Holder *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));  /* a heap type: its instances hold a reference to it */
    Py_VISIT(self->owner);
    return 0;
}

static int holder_clear(Holder *self) {
    Py_CLEAR(self->owner);
    return 0;
}

static void holder_dealloc(Holder *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    holder_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *holder_repr(Holder *self) {
    const char *owner = self->owner ? Py_TYPE(self->owner)->tp_name : "none (cleared)";
    return PyUnicode_FromFormat("<pyguts memory at %p, owner %s, %s>", self->addr, owner,
                                self->readonly ? "read-only" : "writable");
}

static PyMemberDef holder_members[] = {
    {"owner", T_OBJECT, offsetof(Holder, owner), READONLY, "the object whose memory the array shows"},
    {NULL},
};

static PyType_Slot holder_slots[] = {
    {Py_tp_traverse, holder_traverse},
    {Py_tp_clear, holder_clear},
    {Py_tp_dealloc, holder_dealloc},
    {Py_tp_repr, holder_repr},
    {Py_tp_members, holder_members},
    {Py_tp_doc, "Keeps the owner of viewed memory alive, as a pyguts array's .base."},
    {0, NULL},
};

static PyType_Spec holder_spec = {
    "pyguts._ndarray.Holder", sizeof(Holder), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC, holder_slots,
};

static PyTypeObject *holder_type;

/* An array of `descr` over `data` with `base` (a reference stolen, also on failure) as its .base. */
static PyObject *wrap(PyObject *base, void *data, int nd, npy_intp *dims, PyObject *descr, int writable) {
    if (!PyArray_DescrCheck(descr)) {
        Py_DECREF(base);
        return PyErr_Format(PyExc_TypeError, "dtype must be a numpy.dtype, got %.100s", Py_TYPE(descr)->tp_name);
    }
    Py_INCREF(descr);  /* PyArray_NewFromDescr steals it */
    PyObject *arr = PyArray_NewFromDescr(&PyArray_Type, (PyArray_Descr *)descr, nd, dims, NULL, data,
                                         writable ? NPY_ARRAY_CARRAY : NPY_ARRAY_CARRAY_RO, NULL);
    if (arr == NULL) {
        Py_DECREF(base);
        return NULL;
    }
    if (PyArray_SetBaseObject((PyArrayObject *)arr, base) < 0) {  /* steals base */
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

/* held(owner, addr, count, dtype, writable): 1-D array whose base is a new Holder of owner. */
static PyObject *held(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5)
        return PyErr_Format(PyExc_TypeError, "held() takes 5 arguments, got %zd", nargs);
    void *addr = PyLong_AsVoidPtr(args[1]);
    if (addr == NULL && PyErr_Occurred())
        return NULL;
    int writable = PyObject_IsTrue(args[4]);
    if (writable < 0)
        return NULL;
    npy_intp count = PyLong_AsSsize_t(args[2]);
    if (count == -1 && PyErr_Occurred())
        return NULL;
    Holder *h = PyObject_GC_New(Holder, holder_type);
    if (h == NULL)
        return NULL;
    Py_INCREF(args[0]);
    h->owner = args[0];
    h->addr = addr;
    h->readonly = !writable;
    PyObject_GC_Track(h);
    return wrap((PyObject *)h, addr, 1, &count, args[3], writable);
}

/* ---- owned arrays (pyguts.alloc.empty/zeros): memory from the alloc shim's pg_owned_alloc, given
 * back through pg_owned_free by a Memory object's dealloc, in C: no Python __del__ on that path. */
typedef uintptr_t (*alloc_fn)(uintptr_t ctx, size_t nbytes, size_t align, int zero);
typedef void (*free_fn)(uintptr_t ctx, uintptr_t addr, size_t nbytes, size_t align);

typedef struct {
    PyObject_HEAD
    uintptr_t ctx, addr;
    size_t nbytes, align;
    free_fn free;
} Memory;

static void memory_dealloc(Memory *self) {
    PyTypeObject *tp = Py_TYPE(self);
    self->free(self->ctx, self->addr, self->nbytes, self->align);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyObject *memory_addr(Memory *self, void *closure) {
    return PyLong_FromSize_t(self->addr);
}

static PyGetSetDef memory_getset[] = {
    {"addr", (getter)memory_addr, NULL, "start address of the memory", NULL},
    {NULL},
};

static PyType_Slot memory_slots[] = {
    {Py_tp_dealloc, memory_dealloc},
    {Py_tp_getset, memory_getset},
    {Py_tp_doc, "One owned allocation, given back to its allocator when this object dies."},
    {0, NULL},
};

static PyType_Spec memory_spec = {"pyguts._ndarray.Memory", sizeof(Memory), 0, Py_TPFLAGS_DEFAULT, memory_slots};

static PyTypeObject *memory_type;

/* The Python class pyguts.alloc.Block and where its two slots (_plan, _mem) live in an instance. */
static PyTypeObject *block_type;
static Py_ssize_t plan_offset, mem_offset;

static Py_ssize_t slot_offset(PyObject *descr) {
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type) || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        PyErr_SetString(PyExc_TypeError, "expected the member descriptor of a __slots__ name");
        return -1;
    }
    return ((PyMemberDescrObject *)descr)->d_member->offset;
}

/* blocks(Block, plans): from now on owned() makes instances of Block, filling its _plan and _mem
 * slots, and cached() looks requests up in the dict plans (pyguts.alloc.arrays._PLANS). */
static PyObject *plans_dict;

static PyObject *blocks(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyType_Check(args[0]) || !PyDict_CheckExact(args[1]))
        return PyErr_Format(PyExc_TypeError, "blocks() takes the Block class and the plans dict");
    PyObject *dict = ((PyTypeObject *)args[0])->tp_dict;
    PyObject *plan = PyDict_GetItemString(dict, "_plan"), *mem = PyDict_GetItemString(dict, "_mem");
    if (plan == NULL || mem == NULL)
        return PyErr_Format(PyExc_TypeError, "Block must have the __slots__ _plan and _mem");
    if ((plan_offset = slot_offset(plan)) < 0 || (mem_offset = slot_offset(mem)) < 0)
        return NULL;
    Py_INCREF(args[0]);
    Py_XSETREF(block_type, (PyTypeObject *)args[0]);
    Py_INCREF(args[1]);
    Py_XSETREF(plans_dict, args[1]);
    Py_RETURN_NONE;
}

/* An array over new memory for plan (a tuple whose first seven items are (shape, dtype, nbytes,
 * alignment, ctx, address of pg_owned_alloc, address of pg_owned_free)), its base a new Block
 * holding plan and the Memory; None when the allocator has no memory. */
static PyObject *make(PyObject *plan_tuple, int zero) {
    npy_intp dims[NPY_MAXDIMS];
    if (!PyTuple_Check(plan_tuple) || PyTuple_GET_SIZE(plan_tuple) < 7)
        return PyErr_Format(PyExc_TypeError, "a plan is a tuple of at least 7 items");
    if (block_type == NULL)
        return PyErr_Format(PyExc_RuntimeError, "owned() before blocks()");
    PyObject **plan = &PyTuple_GET_ITEM(plan_tuple, 0);
    PyObject *shape = plan[0];
    if (!PyTuple_Check(shape) || PyTuple_GET_SIZE(shape) > NPY_MAXDIMS)
        return PyErr_Format(PyExc_ValueError, "shape must be a tuple of at most %d ints", NPY_MAXDIMS);
    int nd = (int)PyTuple_GET_SIZE(shape);
    for (int i = 0; i < nd; i++) {
        dims[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(shape, i));
        if (dims[i] == -1 && PyErr_Occurred())
            return NULL;
    }
    size_t nbytes = PyLong_AsSize_t(plan[2]), align = PyLong_AsSize_t(plan[3]);
    uintptr_t ctx = (uintptr_t)PyLong_AsVoidPtr(plan[4]);
    alloc_fn alloc = (alloc_fn)PyLong_AsVoidPtr(plan[5]);
    free_fn release = (free_fn)PyLong_AsVoidPtr(plan[6]);
    if (PyErr_Occurred())
        return NULL;
    if (alloc == NULL || release == NULL)
        return PyErr_Format(PyExc_ValueError, "the plan has no allocation functions");
    uintptr_t addr = alloc(ctx, nbytes, align, zero);
    if (addr == 0)
        Py_RETURN_NONE;
    Memory *mem = PyObject_New(Memory, memory_type);
    if (mem == NULL) {
        release(ctx, addr, nbytes, align);
        return NULL;
    }
    mem->ctx = ctx, mem->addr = addr, mem->nbytes = nbytes, mem->align = align, mem->free = release;
    PyObject *block = block_type->tp_alloc(block_type, 0);
    if (block == NULL) {
        Py_DECREF(mem);
        return NULL;
    }
    Py_INCREF(plan_tuple);
    *(PyObject **)((char *)block + plan_offset) = plan_tuple;
    *(PyObject **)((char *)block + mem_offset) = (PyObject *)mem;
    return wrap(block, (void *)addr, nd, dims, plan[1], 1);
}

/* owned(plan, zero): make()'s array. */
static PyObject *owned(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2)
        return PyErr_Format(PyExc_TypeError, "owned() takes a plan tuple and zero");
    int zero = PyObject_IsTrue(args[1]);
    return zero < 0 ? NULL : make(args[0], zero);
}

/* An int, or a tuple of ints, of exactly type int (numpy refuses 3.0 where 3.0 == 3). */
static int exact_ints(PyObject *shape) {
    if (PyLong_CheckExact(shape))
        return 1;
    if (!PyTuple_CheckExact(shape))
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(shape); i++)
        if (!PyLong_CheckExact(PyTuple_GET_ITEM(shape, i)))
            return 0;
    return 1;
}

/* cached(shape, dtype, allocator, alignment, zero): the array of the plan already made for this
 * request, or NotImplemented where the caller must plan it (pyguts.alloc.arrays._alloc): sizes
 * that are not exact ints (3.0 == 3, but numpy refuses a float shape), no plan for the key (or
 * an unhashable one), a dtype object that is not the one planned (dtypes that differ only in
 * metadata compare equal), or an allocator out of memory (the caller says so). */
static PyObject *cached(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5)
        return PyErr_Format(PyExc_TypeError, "cached() takes shape, dtype, allocator, alignment and zero");
    if (plans_dict == NULL)
        return PyErr_Format(PyExc_RuntimeError, "cached() before blocks()");
    if (!PyLong_CheckExact(args[3]) || !exact_ints(args[0]))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *key = PyTuple_Pack(4, args[0], args[1], args[2], args[3]);
    if (key == NULL)
        return NULL;
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *plan;
    int found = PyDict_GetItemRef(plans_dict, key, &plan);   /* a strong reference (free-threaded builds) */
#else
    PyObject *plan = PyDict_GetItemWithError(plans_dict, key);
    int found = plan != NULL ? 1 : PyErr_Occurred() ? -1 : 0;
    Py_XINCREF(plan);
#endif
    Py_DECREF(key);
    if (found <= 0) {
        if (found < 0 && !PyErr_ExceptionMatches(PyExc_TypeError))   /* TypeError: an unhashable key */
            return NULL;
        PyErr_Clear();
        Py_RETURN_NOTIMPLEMENTED;
    }
    if (!PyTuple_Check(plan) || PyTuple_GET_SIZE(plan) < 8
        || (PyTuple_GET_ITEM(plan, 7) != args[1] && PyArray_DescrCheck(args[1]))) {
        Py_DECREF(plan);
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *array = make(plan, PyObject_IsTrue(args[4]) == 1);
    Py_DECREF(plan);
    if (array == Py_None) {
        Py_DECREF(array);
        Py_RETURN_NOTIMPLEMENTED;
    }
    return array;
}

static PyMethodDef methods[] = {
    {"held", (PyCFunction)(void (*)(void))held, METH_FASTCALL,
     "held(owner, addr, count, dtype, writable): 1-D array over addr, base a Holder of owner"},
    {"blocks", (PyCFunction)(void (*)(void))blocks, METH_FASTCALL,
     "blocks(Block, plans): the class owned() makes, the dict cached() reads"},
    {"owned", (PyCFunction)(void (*)(void))owned, METH_FASTCALL,
     "owned(plan, zero): array over new memory from the plan's allocator, or None"},
    {"cached", (PyCFunction)(void (*)(void))cached, METH_FASTCALL,
     "cached(shape, dtype, allocator, alignment, zero): owned() of the planned request, or NotImplemented"},
    {NULL},
};

static PyObject *functions;  /* (Holder, held, blocks, owned, cached), made once, never freed */

/* The address of the tuple (Holder, held, blocks, owned, cached), or 0 with the error printed to stderr. */
uintptr_t pg_nd_functions(void) {
    PyGILState_STATE gil = PyGILState_Ensure();
    if (functions == NULL) {
        PyObject *f[4] = {NULL};
        int ok = _import_array() >= 0
            && (holder_type = (PyTypeObject *)PyType_FromSpec(&holder_spec)) != NULL
            && (memory_type = (PyTypeObject *)PyType_FromSpec(&memory_spec)) != NULL;
        for (int i = 0; ok && i < 4; i++)
            ok = (f[i] = PyCFunction_New(&methods[i], NULL)) != NULL;
        if (!ok || (functions = PyTuple_Pack(5, (PyObject *)holder_type, f[0], f[1], f[2], f[3])) == NULL)
            PyErr_Print();
        for (int i = 0; i < 4; i++)
            Py_XDECREF(f[i]);
    }
    uintptr_t out = (uintptr_t)functions;
    PyGILState_Release(gil);
    return out;
}
