/* The optional compiled reader of decode_node (actors/connection/binary/decoder.py).
 *
 * Built by hatch_build.py when a C compiler is present; without it the pure-Python
 * reader in decoder.py does all the work, and it stays the reference.
 *
 * Contract: read(data, pos, max_depth) returns the node the Python reader gives for
 * the same arguments, or None when it does not handle the input. It handles every
 * well-formed frame except the rare forms it leaves to the Python reader (FB_JID,
 * INTEROP_JID, an AD_JID of an unknown domain type, nesting deeper than
 * C_MAX_LEVEL). On anything malformed it returns None too, and decoder.py then runs
 * the Python reader, which raises the DecodeError with its offset and reason: so
 * every error and every rare form has one implementation, the reference one.
 * Every read is bounds-checked before the byte is touched; recursion is capped.
 *
 * Nodes are built as the Python reader builds them (object.__new__, then the three
 * slots set directly): attrs is a fresh dict, content None, str, bytes or a fresh
 * list of nodes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define LIST_EMPTY 0
#define DICTIONARY_0 236
#define DICTIONARY_3 239
#define AD_JID 247
#define LIST_8 248
#define LIST_16 249
#define JID_PAIR 250
#define HEX_8 251
#define BINARY_8 252
#define BINARY_20 253
#define BINARY_32 254
#define NIBBLE_8 255
#define TOKEN_END 236
#define MAX_STRING_DEPTH 16
/* Deepest node nesting read here (C recursion); deeper input goes to Python. */
#define C_MAX_LEVEL 256

/* Set once by setup(); the tuples keep every string alive. */
static PyTypeObject *node_type = NULL;
static Py_ssize_t off_tag, off_attrs, off_content;
static PyObject *single_tuple = NULL, *double_tuple = NULL, *servers_tuple = NULL;
static PyObject *single[TOKEN_END];
static PyObject *dictionary[4][256];
static PyObject *empty_string = NULL;
static PyObject *servers[4]; /* s.whatsapp.net, lid, hosted, hosted.lid */

typedef struct {
    const unsigned char *d;
    Py_ssize_t end;
    Py_ssize_t pos;
    long max_depth;
} Reader;

/* NULL with no exception set means "not handled here": the caller returns None. */
#define GIVE_UP NULL

static PyObject *read_string(Reader *r, unsigned tag, int depth);

static PyObject *
new_ref(PyObject *o)
{
    Py_INCREF(o);
    return o;
}

/* The length after BINARY_8/20/32 (``tag``, already read): 0, or -1 when it is cut short. */
static int
binary_length(Reader *r, unsigned tag, unsigned long long *n)
{
    const unsigned char *d = r->d + r->pos;
    Py_ssize_t size = tag == BINARY_8 ? 1 : tag == BINARY_20 ? 3 : 4;
    if (r->end - r->pos < size)
        return -1;
    r->pos += size;
    if (tag == BINARY_8)
        *n = d[0];
    else if (tag == BINARY_20)
        *n = ((unsigned long long)(d[0] & 0x0F) << 16) | ((unsigned long long)d[1] << 8) | d[2];
    else
        *n = ((unsigned long long)d[0] << 24) | ((unsigned long long)d[1] << 16)
             | ((unsigned long long)d[2] << 8) | d[3];
    return 0;
}

static PyObject *
raw_string(Reader *r, unsigned tag)
{
    unsigned long long n;
    if (binary_length(r, tag, &n) < 0 || n > (unsigned long long)(r->end - r->pos))
        return GIVE_UP;
    PyObject *s = PyUnicode_DecodeUTF8((const char *)r->d + r->pos, (Py_ssize_t)n, "replace");
    r->pos += (Py_ssize_t)n;
    return s;
}

/* Characters of the nibbles 0..15; -1 for 12..14 (invalid); 15 (the pad) is NUL. */
static const int NIBBLE_CHAR[16] = {
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '-', '.', -1, -1, -1, 0,
};
static const char HEX_UPPER[] = "0123456789ABCDEF";

static PyObject *
packed(Reader *r, int nibble)
{
    if (r->pos >= r->end)
        return GIVE_UP;
    unsigned head = r->d[r->pos++];
    Py_ssize_t n = head & 0x7F;
    if (n > r->end - r->pos)
        return GIVE_UP;
    Py_ssize_t length = 2 * n;
    if ((head & 0x80) && length)
        length -= 1; /* odd length: the last nibble is padding */
    PyObject *s = PyUnicode_New(length, 127);
    if (s == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(s);
    const unsigned char *in = r->d + r->pos;
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned hi = in[i] >> 4, lo = in[i] & 0x0F;
        int a, b;
        if (nibble) {
            a = NIBBLE_CHAR[hi];
            b = NIBBLE_CHAR[lo];
            if (a < 0 || b < 0) { /* the pad nibble is checked too, as in Python */
                Py_DECREF(s);
                return GIVE_UP;
            }
        } else {
            a = HEX_UPPER[hi];
            b = HEX_UPPER[lo];
        }
        out[k++] = (Py_UCS1)a;
        if (k < length)
            out[k++] = (Py_UCS1)b;
    }
    r->pos += n;
    return s;
}

/* user, ":device" when device >= 0, "@", server: one new string. */
static PyObject *
jid(PyObject *user, long device, PyObject *server)
{
    if (PyUnicode_IS_ASCII(user) && PyUnicode_IS_ASCII(server)) {
        char digits[8];
        int nd = device >= 0 ? snprintf(digits, sizeof digits, ":%ld", device) : 0;
        Py_ssize_t lu = PyUnicode_GET_LENGTH(user), ls = PyUnicode_GET_LENGTH(server);
        PyObject *s = PyUnicode_New(lu + nd + 1 + ls, 127);
        if (s == NULL)
            return NULL;
        Py_UCS1 *out = PyUnicode_1BYTE_DATA(s);
        memcpy(out, PyUnicode_1BYTE_DATA(user), lu);
        memcpy(out + lu, digits, nd);
        out[lu + nd] = '@';
        memcpy(out + lu + nd + 1, PyUnicode_1BYTE_DATA(server), ls);
        return s;
    }
    if (device >= 0)
        return PyUnicode_FromFormat("%U:%ld@%U", user, device, server);
    return PyUnicode_FromFormat("%U@%U", user, server);
}

static PyObject *
jid_pair(Reader *r, int depth)
{
    if (r->pos >= r->end)
        return GIVE_UP;
    PyObject *user = read_string(r, r->d[r->pos++], depth);
    if (user == NULL)
        return NULL;
    if (r->pos >= r->end) {
        Py_DECREF(user);
        return GIVE_UP;
    }
    unsigned b = r->d[r->pos++];
    PyObject *server;
    if (1 <= b && b < TOKEN_END) {
        server = new_ref(single[b]);
    } else {
        server = read_string(r, b, depth);
        if (server == NULL || PyUnicode_GET_LENGTH(server) == 0) {
            Py_DECREF(user);
            Py_XDECREF(server);
            return GIVE_UP;
        }
    }
    PyObject *out = jid(user, -1, server);
    Py_DECREF(user);
    Py_DECREF(server);
    return out;
}

static PyObject *
ad_jid(Reader *r, int depth)
{
    if (r->end - r->pos < 3)
        return GIVE_UP;
    unsigned domain = r->d[r->pos], device = r->d[r->pos + 1], b = r->d[r->pos + 2];
    int known = domain == 0 ? 0 : domain == 1 ? 1 : domain == 128 ? 2 : domain == 129 ? 3 : -1;
    if (known < 0)
        return GIVE_UP; /* format_ad_jid's rules live in Python only */
    r->pos += 3;
    PyObject *user = read_string(r, b, depth);
    if (user == NULL)
        return NULL;
    PyObject *out = jid(user, device ? (long)device : -1, servers[known]);
    Py_DECREF(user);
    return out;
}

static PyObject *
read_string(Reader *r, unsigned tag, int depth)
{
    if (1 <= tag && tag < TOKEN_END)
        return new_ref(single[tag]);
    if (depth > MAX_STRING_DEPTH)
        return GIVE_UP;
    const unsigned char *d = r->d;
    Py_ssize_t left = r->end - r->pos;
    switch (tag) {
    case JID_PAIR:
        return jid_pair(r, depth + 1);
    case NIBBLE_8:
        return packed(r, 1);
    case HEX_8:
        return packed(r, 0);
    case BINARY_8:
    case BINARY_20:
    case BINARY_32:
        return raw_string(r, tag);
    case AD_JID:
        return ad_jid(r, depth + 1);
    case LIST_EMPTY:
        return new_ref(empty_string);
    default:
        if (DICTIONARY_0 <= tag && tag <= DICTIONARY_3) {
            if (left < 1)
                return GIVE_UP;
            return new_ref(dictionary[tag - DICTIONARY_0][d[r->pos++]]);
        }
        return GIVE_UP; /* FB_JID, INTEROP_JID, or not a string tag */
    }
}

static PyObject *
read_bytes(Reader *r, unsigned tag)
{
    unsigned long long n;
    if (binary_length(r, tag, &n) < 0 || n > (unsigned long long)(r->end - r->pos))
        return GIVE_UP;
    PyObject *b = PyBytes_FromStringAndSize((const char *)r->d + r->pos, (Py_ssize_t)n);
    r->pos += (Py_ssize_t)n;
    return b;
}

static PyObject *read_node(Reader *r, long level);

static PyObject *
read_children(Reader *r, Py_ssize_t n, long level)
{
    if (n == 0)
        return PyList_New(0);
    if (level > r->max_depth - 2 || level >= C_MAX_LEVEL)
        return GIVE_UP;
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *child = read_node(r, level + 1);
        if (child == NULL) {
            Py_DECREF(list); /* unfilled items are NULL: list_dealloc skips them */
            return NULL;
        }
        PyList_SET_ITEM(list, i, child);
    }
    return list;
}

static PyObject *
read_content(Reader *r, long level)
{
    if (r->pos >= r->end)
        return GIVE_UP;
    const unsigned char *d = r->d;
    unsigned b = d[r->pos++];
    Py_ssize_t left = r->end - r->pos;
    switch (b) {
    case BINARY_8:
    case BINARY_20:
    case BINARY_32:
        return read_bytes(r, b);
    case LIST_EMPTY:
        return read_children(r, 0, level);
    case LIST_8:
        if (left < 1)
            return GIVE_UP;
        r->pos += 1;
        return read_children(r, d[r->pos - 1], level);
    case LIST_16:
        if (left < 2)
            return GIVE_UP;
        r->pos += 2;
        return read_children(r, (d[r->pos - 2] << 8) | d[r->pos - 1], level);
    default:
        return read_string(r, b, 0);
    }
}

static PyObject *
new_node(PyObject *tag, PyObject *attrs, PyObject *content)
{
    PyObject *node = node_type->tp_alloc(node_type, 0);
    if (node == NULL) {
        Py_DECREF(tag);
        Py_DECREF(attrs);
        Py_DECREF(content);
        return NULL;
    }
    /* The slots are NULL in a fresh object: these stores take over the references. */
    *(PyObject **)((char *)node + off_tag) = tag;
    *(PyObject **)((char *)node + off_attrs) = attrs;
    *(PyObject **)((char *)node + off_content) = content;
    return node;
}

static PyObject *
read_node(Reader *r, long level)
{
    const unsigned char *d = r->d;
    Py_ssize_t size;
    if (r->end - r->pos < 2)
        return GIVE_UP;
    unsigned b = d[r->pos];
    if (b == LIST_8) {
        size = d[r->pos + 1];
        r->pos += 2;
    } else if (b == LIST_16) {
        if (r->end - r->pos < 3)
            return GIVE_UP;
        size = (d[r->pos + 1] << 8) | d[r->pos + 2];
        r->pos += 3;
    } else {
        return GIVE_UP;
    }
    if (size == 0 || r->pos >= r->end)
        return GIVE_UP;
    PyObject *tag = read_string(r, d[r->pos++], 0);
    if (tag == NULL)
        return NULL;
    if (PyUnicode_GET_LENGTH(tag) == 0) {
        Py_DECREF(tag);
        return GIVE_UP;
    }
    PyObject *attrs = PyDict_New();
    if (attrs == NULL) {
        Py_DECREF(tag);
        return NULL;
    }
    for (Py_ssize_t pairs = (size - 1) >> 1; pairs > 0; pairs--) {
        PyObject *key = NULL, *value = NULL;
        if (r->pos < r->end)
            key = read_string(r, d[r->pos++], 0);
        if (key != NULL && r->pos < r->end)
            value = read_string(r, d[r->pos++], 0);
        if (value == NULL || PyDict_SetItem(attrs, key, value) < 0) {
            Py_XDECREF(key);
            Py_XDECREF(value);
            Py_DECREF(attrs);
            Py_DECREF(tag);
            return NULL;
        }
        Py_DECREF(key);
        Py_DECREF(value);
    }
    PyObject *content = Py_None;
    if (size & 1) {
        Py_INCREF(content);
    } else {
        content = read_content(r, level);
        if (content == NULL) {
            Py_DECREF(attrs);
            Py_DECREF(tag);
            return NULL;
        }
    }
    return new_node(tag, attrs, content);
}

static PyObject *
speedups_read(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (node_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.read: setup() was not called");
        return NULL;
    }
    if (nargs != 3 || !PyBytes_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "_speedups.read(data: bytes, pos: int, max_depth: int)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    long max_depth = PyLong_AsLong(args[2]);
    if (max_depth == -1 && PyErr_Occurred())
        return NULL;
    Reader r = {(const unsigned char *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]),
                pos, max_depth};
    if (pos < 0 || pos > r.end)
        Py_RETURN_NONE;
    PyObject *node = read_node(&r, 0);
    if (node == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return node;
}

static int
slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *offset)
{
    /* The class attribute of a slot is its member descriptor, which knows the offset. */
    PyObject *descr = PyObject_GetAttrString((PyObject *)type, name);
    if (descr == NULL)
        return -1;
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        Py_DECREF(descr);
        PyErr_Format(PyExc_TypeError, "_speedups.setup: %s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    Py_DECREF(descr); /* the type keeps the descriptor alive */
    if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
        PyErr_Format(PyExc_TypeError, "_speedups.setup: %s.%s is not a writable object slot",
                     type->tp_name, name);
        return -1;
    }
    *offset = member->offset;
    return 0;
}

static int
check_strings(PyObject *table, Py_ssize_t size, const char *what)
{
    if (!PyTuple_CheckExact(table) || PyTuple_GET_SIZE(table) != size) {
        PyErr_Format(PyExc_TypeError, "_speedups.setup: %s must be a tuple of %zd", what, size);
        return -1;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(table, i))) {
            PyErr_Format(PyExc_TypeError, "_speedups.setup: %s[%zd] is not a str", what, i);
            return -1;
        }
    }
    return 0;
}

static PyObject *
speedups_setup(PyObject *module, PyObject *args)
{
    PyObject *type, *singles, *doubles, *names;
    if (!PyArg_ParseTuple(args, "O!O!O!O!:setup", &PyType_Type, &type, &PyTuple_Type, &singles,
                          &PyTuple_Type, &doubles, &PyTuple_Type, &names))
        return NULL;
    Py_ssize_t tag_at, attrs_at, content_at;
    PyTypeObject *t = (PyTypeObject *)type;
    if (slot_offset(t, "tag", &tag_at) < 0 || slot_offset(t, "attrs", &attrs_at) < 0
        || slot_offset(t, "content", &content_at) < 0)
        return NULL;
    if (check_strings(singles, TOKEN_END, "single-byte tokens") < 0
        || check_strings(names, 4, "AD_JID servers") < 0)
        return NULL;
    if (PyTuple_GET_SIZE(doubles) != 4) {
        PyErr_SetString(PyExc_TypeError, "_speedups.setup: double-byte tokens must be 4 tables");
        return NULL;
    }
    for (int n = 0; n < 4; n++) {
        if (check_strings(PyTuple_GET_ITEM(doubles, n), 256, "a double-byte table") < 0)
            return NULL;
    }
    PyObject *empty = PyUnicode_New(0, 0);
    if (empty == NULL)
        return NULL;
    /* Keep the tables (and through them every string) alive for good. */
    Py_INCREF(type);
    Py_INCREF(singles);
    Py_INCREF(doubles);
    Py_INCREF(names);
    Py_XDECREF(node_type);
    Py_XDECREF(single_tuple);
    Py_XDECREF(double_tuple);
    Py_XDECREF(servers_tuple);
    Py_XDECREF(empty_string);
    node_type = t;
    servers_tuple = names;
    single_tuple = singles;
    double_tuple = doubles;
    empty_string = empty;
    off_tag = tag_at;
    off_attrs = attrs_at;
    off_content = content_at;
    for (int i = 0; i < TOKEN_END; i++)
        single[i] = PyTuple_GET_ITEM(singles, i);
    for (int n = 0; n < 4; n++)
        for (int i = 0; i < 256; i++)
            dictionary[n][i] = PyTuple_GET_ITEM(PyTuple_GET_ITEM(doubles, n), i);
    for (int i = 0; i < 4; i++)
        servers[i] = PyTuple_GET_ITEM(names, i);
    Py_RETURN_NONE;
}

static PyMethodDef speedups_methods[] = {
    {"setup", (PyCFunction)speedups_setup, METH_VARARGS,
     "setup(node_type, single_tokens, double_tokens, ad_servers): tables to read with."},
    {"read", (PyCFunction)(void (*)(void))speedups_read, METH_FASTCALL,
     "read(data, pos, max_depth) -> node, or None when the Python reader must decide."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "_speedups",
    "The optional compiled reader of decode_node; see decoder.py.", -1, speedups_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&speedups_module);
}
