"""The acceptance corpus of issue 15: realistic clean functions are never flagged; planted leaks are found.

Every function here is a plain module-level function called with fixed arguments. The clean ones do
what real code does, including growth that stops on its own: caches that fill (lru_cache, a bounded
dict, re's and struct's caches, sqlite's statement cache and cursor weakrefs, logging's loggers,
fnmatch's and ipaddress's lru_caches, enum's flag pseudo-members), tmp files, sockets, numpy. The
planted ones keep one object() every 1, 10 or 100 calls, hide such a leak in a filling cache, or
leak a reference on an object the caller never names (a C extension's cached object, leakplanted.c).

Every test runs with a CPU hog on another core (tests/conftest.py): a verdict must not depend on
load. benchmarks/leaks_verdicts.py runs the same table (CASES) five times, each check in a fresh
process, and prints the verdicts.
"""

from __future__ import annotations

import array
import ast
import atexit
import base64
import collections
import copy
import csv
import dataclasses
import datetime
import decimal
import difflib
import email
import email.utils
import enum
import fnmatch
import fractions
import functools
import hashlib
import heapq
import html
import importlib.util
import io
import ipaddress
import itertools
import json
import logging
import lzma
import os
import pathlib
import pickle
import re
import shlex
import shutil
import socket
import sqlite3
import statistics
import string
import struct
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import threading
import time
import traceback
import urllib.parse
import uuid
import warnings
import weakref
import xml.etree.ElementTree as ElementTree
import zlib
from typing import Callable

import pytest

from pyguts import leaks

try:
    import numpy as np
except ImportError:   # the numpy cases skip with the reason
    np = None

HERE = pathlib.Path(__file__).resolve().parent
PLANTED_SOURCE = HERE / "leakplanted.c"

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.usefixtures("cpu_hog")

# -- shared state of the corpus (created once, as real programs do) ----------------------------------

#: A private folder for the tmp-file cases, removed at exit.
TMP = pathlib.Path(tempfile.mkdtemp(prefix="pyguts-leaks-realistic-"))
atexit.register(shutil.rmtree, TMP, True)

DB = sqlite3.connect(":memory:")
DB.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL)")
DB.executemany("INSERT INTO items VALUES (?, ?, ?)", [(i, f"item {i}", i * 1.25) for i in range(300)])
DB.commit()
atexit.register(DB.close)

RECORD = {"id": 12345, "name": "widget", "tags": ["a", "b", "c"], "price": 9.99,
          "dims": {"w": 1.5, "h": 2.25}, "active": True, "notes": None}
TEXT = ("The quick brown fox jumps over the lazy dog. " * 12).strip()
ROWS = [["id", "name", "price"]] + [[str(i), f"name {i}", f"{i * 0.5:.2f}"] for i in range(40)]
#: A few hundred distinct patterns each, cycled through (re's cache holds 512).
COMPILE_PATTERNS = [rf"key{i}=(\d+)" for i in range(300)]
SUB_PATTERNS = [rf"\b(w{i}|x{i})\b" for i in range(200)]
MATCH_PATTERNS = [rf"(?P<head>[a-z]+){i}-(?P<tail>\d*)" for i in range(250)]
#: 120 struct formats and their item counts (struct's cache holds 100 and is cleared when full).
STRUCT_FORMATS = [(f"<{n}i{m}h", n + m) for n in range(1, 13) for m in range(10)]
STRPTIME_FORMATS = ["%Y-%m-%d", "%d/%m/%Y %H:%M", "%Y%m%dT%H%M%S", "%b %d %Y", "%Y-%m-%d %H:%M:%S"]
GLOBS = [f"*{i}.t?t" for i in range(200)]
EMAIL_TEXT = ("From: Ada Lovelace <ada@example.org>\nTo: bob@example.org\nSubject: Engines\n"
              "Date: Mon, 10 Dec 1842 10:00:00 +0000\nContent-Type: text/plain\n\nThe engine weaves.\n")
XML_TEXT = "<catalog>" + "".join(f'<book id="{i}"><title>T{i}</title><price>{i}.5</price></book>'
                                 for i in range(20)) + "</catalog>"
SOURCE = "def area(w, h):\n    return w * h\n\nresult = [area(i, i + 1) for i in range(10)]\n"
PAYLOAD = bytes(range(256)) * 16
NUMBERS_TEXT = ",".join(f"{i * 0.75:.2f}" for i in range(200))
HAYSTACK = "a haystack with a needle somewhere in the middle of it"

#: Counters feeding the caches new keys, one per function.
LRU_KEYS = itertools.count(1000)
CYCLE = itertools.count()
DICT_KEYS = itertools.count()
DICT_CACHE: dict = {}
DICT_CACHE_MAX = 300

#: A C extension with a cache (leakplanted.c); set by load_leakplanted().
leakplanted = None


@functools.lru_cache(maxsize=128)
def _square(n: int) -> int:
    return n * n


@functools.lru_cache(maxsize=None)
def _slug(n: int) -> str:
    return f"slug-{n:05d}"


@dataclasses.dataclass
class Order:
    id: int
    items: list
    total: decimal.Decimal = decimal.Decimal("0")


@dataclasses.dataclass(frozen=True)
class Point:
    x: float
    y: float


Pair = collections.namedtuple("Pair", "left right")


class Perm(enum.Flag):
    R = 1
    W = 2
    X = 4
    S = 8
    T = 16
    U = 32
    G = 64
    O = 128  # noqa: E741


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Node:
    def __init__(self, value, parent=None):
        self.value = value
        self.parent = parent
        self.children = []


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a, self.b = a, b


class CorpusError(Exception):
    pass


LOCK = threading.Lock()
RLOCK = threading.RLock()
WEAK_VALUES = weakref.WeakValueDictionary()
WEAK_KEYS = itertools.count()


# -- clean functions ------------------------------------------------------------------------------

def lru_cache_filling():
    """lru_cache(maxsize=128) fed a new key every call: fills, then evicts."""
    return _square(next(LRU_KEYS))


def lru_cache_unbounded_cycling():
    """An unbounded lru_cache over 300 distinct keys: fills for 300 calls, then only hits."""
    return _slug(next(CYCLE) % 300)


def dict_cache_bounded():
    """A dict cache bounded at 300 entries, a new key every call, the oldest evicted."""
    key = next(DICT_KEYS)
    if len(DICT_CACHE) >= DICT_CACHE_MAX:
        del DICT_CACHE[next(iter(DICT_CACHE))]
    DICT_CACHE[key] = ("value", key * 2)
    return len(DICT_CACHE)


def sqlite_fetchall(limit):
    """execute().fetchall() on a connection made once (it clears its cursor weakrefs every ~200)."""
    return DB.execute("SELECT id, name, price FROM items WHERE id < ?", (limit,)).fetchall()


def sqlite_statements_cycling():
    """200 distinct statements through sqlite's statement cache (128 by default)."""
    n = next(CYCLE) % 200
    return DB.execute(f"SELECT count(*), sum(price) FROM items WHERE id > {n}").fetchone()


def re_compile_cycling(text):
    """re.compile over 300 distinct patterns, cycled (re's cache holds 512)."""
    return re.compile(COMPILE_PATTERNS[next(CYCLE) % 300]).search(text)


def re_sub_cycling(text):
    """re.sub over 200 distinct patterns, cycled."""
    return re.sub(SUB_PATTERNS[next(CYCLE) % 200], "<w>", text)


def re_match_cycling():
    """re.match over 250 distinct patterns, cycled, with groups read."""
    m = re.match(MATCH_PATTERNS[next(CYCLE) % 250], "abc17-42")
    return m.groupdict() if m else None


def tmp_write_text():
    """The body of the issue's failing test: (tmp_path / "x").write_text("hi"), read back."""
    path = TMP / "x"
    path.write_text("hi")
    return path.read_text()


def tmp_files_cycling():
    """Write, stat and read one of 50 files, then list the folder."""
    path = TMP / f"part-{next(CYCLE) % 50}.txt"
    path.write_bytes(PAYLOAD[:512])
    size = path.stat().st_size
    with open(path, "rb") as f:
        data = f.read()
    return size, len(data), sorted(entry.name for entry in os.scandir(TMP))[:3]


def json_roundtrip(record):
    text = json.dumps(record, sort_keys=True, indent=2)
    return json.loads(text) == record


def pickle_roundtrip():
    order = Order(7, [Point(1.0, 2.0), Point(3.5, 4.5)], decimal.Decimal("19.90"))
    return pickle.loads(pickle.dumps(order, protocol=pickle.HIGHEST_PROTOCOL)) == order


def csv_roundtrip(rows):
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return list(csv.DictReader(io.StringIO(out.getvalue())))[-1]


def decimal_arithmetic():
    with decimal.localcontext() as ctx:
        ctx.prec = 30
        total = sum((decimal.Decimal(i) / decimal.Decimal(7) for i in range(1, 40)), decimal.Decimal(0))
        return total.quantize(decimal.Decimal("0.0001"), rounding=decimal.ROUND_HALF_EVEN)


def datetime_arithmetic():
    start = datetime.datetime(2024, 2, 28, 12, 30, tzinfo=datetime.timezone.utc)
    days = [start + datetime.timedelta(days=i, hours=i) for i in range(20)]
    return [d.isoformat() for d in days][-1], (days[-1] - days[0]).total_seconds(), start.strftime("%A %d %B")


def datetime_strptime_cycling():
    """strptime through five formats (_strptime caches compiled formats)."""
    fmt = STRPTIME_FORMATS[next(CYCLE) % len(STRPTIME_FORMATS)]
    moment = datetime.datetime(2023, 7, 14, 9, 45, 30)
    return datetime.datetime.strptime(moment.strftime(fmt), fmt)


def zlib_roundtrip(data):
    return zlib.decompress(zlib.compress(data, 6)) == data, zlib.crc32(data)


def hashlib_digests(data):
    return hashlib.sha256(data).hexdigest(), hashlib.md5(data).digest(), hashlib.blake2b(data, digest_size=16).hexdigest()


def struct_formats_cycling():
    """struct.pack/unpack over 120 formats (struct's cache holds 100 and is then cleared)."""
    fmt, count = STRUCT_FORMATS[next(CYCLE) % len(STRUCT_FORMATS)]
    return struct.unpack(fmt, struct.pack(fmt, *range(count)))


def textwrap_fill(text):
    return textwrap.fill(text, width=38), textwrap.dedent("    a\n    b\n"), textwrap.shorten(text, 60)


def collections_ops(text):
    words = text.split()
    counts = collections.Counter(words).most_common(3)
    recent = collections.deque(words, maxlen=5)
    ordered = collections.OrderedDict((w, len(w)) for w in words)
    ordered.move_to_end("fox")
    grouped = collections.defaultdict(list)
    for w in words:
        grouped[w[0]].append(w)
    return counts, list(recent), Pair(len(ordered), len(grouped))


def itertools_ops():
    pairs = list(itertools.combinations(range(8), 2))
    groups = {k: len(list(g)) for k, g in itertools.groupby(sorted(pairs), key=lambda p: p[0])}
    chained = list(itertools.islice(itertools.chain.from_iterable(pairs), 10))
    return groups, chained, list(itertools.accumulate(range(10)))


def numpy_small_ops():
    a = np.arange(100.0).reshape(10, 10)
    b = (a.T @ a + 1.0) / 3.0
    return float(b.sum()), float(np.linalg.norm(a[3])), int(np.argmax(b[:, 2]))


def numpy_parse_text(text):
    values = np.fromstring(text, dtype=np.float64, sep=",")
    words = np.array(text.split(",")[:50], dtype=np.float64)
    table = np.loadtxt(io.StringIO("1 2 3\n4 5 6\n7 8 9\n"))
    return float(values.mean()), float(words.max()), table.shape


def numpy_unique():
    data = (np.arange(500) * 7919) % 37
    values, counts = np.unique(data, return_counts=True)
    return values.size, int(counts.max()), np.sort(data)[-1]


def string_formatting():
    x, n, name = 3.14159, 42, "pyguts"
    return (f"{x:>10.3f}|{n:05d}|{name!r:^12}", "%s has %d items (%.1f%%)" % (name, n, x),
            "{0}:{1:x}".format(name, n * 1000), string.Template("$who likes $what").substitute(who=name, what="C"))


def instances_created_and_dropped():
    """Objects with __dict__, with __slots__, and a parent/child cycle (gc frees it)."""
    root = Node(0)
    for i in range(20):
        root.children.append(Node(i, parent=root))
    pairs = [Slotted(i, -i) for i in range(20)]
    return len(root.children) + sum(p.a for p in pairs)


def _countdown(n):
    try:
        while n:
            yield n
            n -= 1
    finally:
        pass


def _delegate():
    yield from _countdown(5)
    yield from (i * i for i in range(5))


def generators():
    gen = _countdown(100)
    first = [next(gen) for _ in range(3)]
    gen.close()
    return first, sum(i for i in range(100) if i % 3), list(_delegate())


def _parse_positive(text):
    value = int(text)
    if value < 0:
        raise CorpusError(f"negative: {value}")
    return value


def exceptions_caught():
    """Exceptions raised, chained, caught and formatted (linecache fills with this file once)."""
    results = []
    for text in ("5", "x", "-3"):
        try:
            try:
                results.append(_parse_positive(text))
            except ValueError as exc:
                raise CorpusError("bad input") from exc
        except CorpusError as exc:
            results.append(type(exc.__cause__).__name__ if exc.__cause__ else str(exc))
    try:
        {}["missing"]
    except KeyError:
        results.append(traceback.format_exc().count("\n"))
    return results


def threading_locks():
    total = 0
    for i in range(20):
        with LOCK:
            total += i
        with RLOCK:
            with RLOCK:
                total -= 1
    event = threading.Event()
    event.set()
    cond = threading.Condition()
    with cond:
        cond.notify_all()
    local = threading.local()
    local.value = total
    return event.wait(0), local.value


def bytes_and_string_io(data):
    buf = io.BytesIO()
    buf.write(data)
    buf.seek(0)
    head = buf.read(16)
    text = io.TextIOWrapper(io.BytesIO("héllo\nwörld\n".encode()), encoding="utf-8")
    lines = text.readlines()
    text.close()
    return head, lines, io.StringIO("a,b\nc,d\n").read().split()


def _noop(ref):
    pass


def weakrefs():
    """A weak-value registry fed a new key every call; the values die, their entries go."""
    node = Node(1)
    WEAK_VALUES[next(WEAK_KEYS)] = node
    ref = weakref.ref(node, _noop)
    proxy = weakref.proxy(node)
    alive = ref() is node and proxy.value == 1
    del node, proxy
    return alive, ref() is None, len(WEAK_VALUES)


def enum_flags_combining():
    """Flag combinations: enum caches each new pseudo-member (at most 256 here)."""
    perm = Perm(next(CYCLE) % 256)
    return bool(perm & Perm.R), perm.value, Color("green").name, Color.BLUE in Color, str(perm)


def dataclasses_ops():
    order = Order(1, [Point(0.5, 1.5)], decimal.Decimal("2.50"))
    copied = dataclasses.replace(order, id=2)
    return dataclasses.asdict(copied), hash(Point(1.0, 2.0)), dataclasses.astuple(Point(3.0, 4.0))


def email_parse(text):
    msg = email.message_from_string(text)
    name, addr = email.utils.parseaddr(msg["From"])
    when = email.utils.parsedate_to_datetime(msg["Date"])
    return name, addr, msg["Subject"], when.year, msg.get_payload().strip(), email.utils.formatdate(0)


def urllib_parse_cycling():
    """urlsplit over 300 distinct URLs (an lru_cache of 128 on 3.11+, a cleared dict on 3.10)."""
    n = next(CYCLE) % 300
    url = f"https://host{n}.example.org:8080/path/to/{n}?q=search+{n}&page=2#frag"
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    return parts.hostname, query, urllib.parse.urlencode({"q": f"a b/{n}", "x": "é"}), urllib.parse.quote("a b&c")


def fnmatch_cycling():
    """fnmatch over 200 glob patterns (fnmatch's lru_cache keeps every compiled pattern)."""
    n = next(CYCLE)
    return fnmatch.fnmatch(f"file{n % 50}.txt", GLOBS[n % len(GLOBS)])


def logging_cycling_loggers():
    """getLogger over 200 names (the manager keeps every logger) and a disabled debug call."""
    n = next(CYCLE) % 200
    log = logging.getLogger(f"pyguts.corpus.worker{n}")
    log.debug("worker %d has %s", n, "nothing to say")
    return log.isEnabledFor(logging.DEBUG), log.getEffectiveLevel()


def warnings_caught():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn("old thing", DeprecationWarning)
    return [str(w.message) for w in caught]


def socketpair_roundtrip(data):
    """Two sockets opened, used and closed (fds come and go)."""
    a, b = socket.socketpair()
    with a, b:
        a.sendall(data[:64])
        return b.recv(64)


def lzma_roundtrip(data):
    """lzma's encoder mallocs and frees megabytes per call (resident memory comes and goes)."""
    return lzma.decompress(lzma.compress(data, preset=0)) == data


def xml_etree(text):
    root = ElementTree.fromstring(text)
    prices = [float(book.findtext("price")) for book in root.iter("book")]
    root.append(ElementTree.Element("book", id="new"))
    return sum(prices), len(ElementTree.tostring(root))


def ast_compile_exec(source):
    """Parse, compile and run code in a fresh namespace (its function and globals form a cycle)."""
    namespace: dict = {}
    exec(compile(ast.parse(source), "<corpus>", "exec"), namespace)
    return namespace["result"][-1], namespace["area"](2, 3)


def deepcopy_nested():
    nested = {"orders": [Order(i, [Point(i, i)]) for i in range(5)], "meta": {"tags": ["x", "y"], "n": (1, 2)}}
    clone = copy.deepcopy(nested)
    return clone == nested and clone is not nested, copy.copy(nested["meta"])


def fractions_and_statistics():
    values = [fractions.Fraction(i, 7) for i in range(1, 30)]
    floats = [i * 0.37 for i in range(50)]
    return statistics.mean(values), statistics.median(floats), statistics.pstdev(floats), sum(values)


def uuid_and_base64():
    name = uuid.uuid5(uuid.NAMESPACE_DNS, "pyguts.example.org")
    random_id = uuid.uuid4()
    encoded = base64.b64encode(name.bytes + random_id.bytes)
    return str(name), len(base64.b64decode(encoded)), base64.urlsafe_b64encode(b"\xff\xfe").decode()


def ipaddress_cycling():
    """ip_address over 300 addresses; is_private is an lru_cache(128) holding the addresses."""
    n = next(CYCLE) % 300
    address = ipaddress.ip_address(f"10.{n // 256}.{n % 256}.7")
    network = ipaddress.ip_network("192.168.0.0/28")
    return address.is_private, address in network, len(list(network.hosts()))


def array_and_memoryview():
    values = array.array("d", range(100))
    view = memoryview(values).cast("B")
    window = bytes(view[8:24])
    doubled = array.array("d", (v * 2 for v in values))
    return len(window), doubled[-1], view.nbytes


def difflib_ratio(text):
    other = text.replace("fox", "cat").replace("lazy", "busy")
    ratio = difflib.SequenceMatcher(None, text[:200], other[:200]).ratio()
    return round(ratio, 3), difflib.get_close_matches("appel", ["ape", "apple", "peach", "puppy"])


def text_escaping():
    escaped = html.escape('<a href="x">Tom & "Jerry"</a>')
    return escaped, html.unescape(escaped + " &eacute; &#x263a;"), shlex.split('cmd --opt "a b" c\\ d'), shlex.quote("a b")


def heapq_and_sorting():
    data = [(i * 7919) % 1009 for i in range(300)]
    heap = list(data)
    heapq.heapify(heap)
    smallest = [heapq.heappop(heap) for _ in range(5)]
    return smallest, heapq.nlargest(3, data), sorted(data, key=lambda v: (-v % 10, v))[:5]


def c_extension_cache_clean():
    """A C extension's cached object looked up and given back (the control of the unnamed leak)."""
    return leakplanted.cached_search("needle", HAYSTACK)


# -- planted leaks --------------------------------------------------------------------------------

#: What the planted leaks keep (cleared after each test).
KEPT: list = []
EVERY_CALL = itertools.count()
EVERY_10 = itertools.count()
EVERY_100 = itertools.count()
NOISY_KEYS = itertools.count()
NOISY_CACHE: dict = {}


def keep_object_every_call():
    KEPT.append(object())


def keep_object_every_10th_call():
    if next(EVERY_10) % 10 == 0:
        KEPT.append(object())


def keep_object_every_100th_call():
    if next(EVERY_100) % 100 == 0:
        KEPT.append(object())


def noisy_cache_with_slow_leak():
    """A dict cache filling to 300 entries then evicting (legitimate), and one object() kept every 10 calls."""
    n = next(NOISY_KEYS)
    if len(NOISY_CACHE) >= DICT_CACHE_MAX:
        del NOISY_CACHE[next(iter(NOISY_CACHE))]
    NOISY_CACHE[n] = (f"entry {n}", [n])
    if n % 10 == 0:
        KEPT.append(object())


def c_extension_cache_leaking():
    """Names nothing of the object it leaks: the C function increfs its own cached object."""
    return leakplanted.cached_search_leaking("pin", HAYSTACK)


# -- the table ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
    """One function of the corpus: how to call it, the leak kind its report must name (None: clean),
    and what it needs ("numpy", "leakplanted": the C extension built from leakplanted.c)."""

    fn: Callable
    args: tuple = ()
    kind: str | None = None
    needs: str = ""

    @property
    def name(self) -> str:
        return self.fn.__name__


CLEAN = [
    Case(lru_cache_filling),
    Case(lru_cache_unbounded_cycling),
    Case(dict_cache_bounded),
    Case(sqlite_fetchall, (50,)),
    Case(sqlite_statements_cycling),
    Case(re_compile_cycling, ("a key17=42 b",)),
    Case(re_sub_cycling, (TEXT,)),
    Case(re_match_cycling),
    Case(tmp_write_text),
    Case(tmp_files_cycling),
    Case(json_roundtrip, (RECORD,)),
    Case(pickle_roundtrip),
    Case(csv_roundtrip, (ROWS,)),
    Case(decimal_arithmetic),
    Case(datetime_arithmetic),
    Case(datetime_strptime_cycling),
    Case(zlib_roundtrip, (PAYLOAD,)),
    Case(hashlib_digests, (PAYLOAD,)),
    Case(struct_formats_cycling),
    Case(textwrap_fill, (TEXT,)),
    Case(collections_ops, (TEXT,)),
    Case(itertools_ops),
    Case(numpy_small_ops, needs="numpy"),
    Case(numpy_parse_text, (NUMBERS_TEXT,), needs="numpy"),
    Case(numpy_unique, needs="numpy"),
    Case(string_formatting),
    Case(instances_created_and_dropped),
    Case(generators),
    Case(exceptions_caught),
    Case(threading_locks),
    Case(bytes_and_string_io, (PAYLOAD,)),
    Case(weakrefs),
    Case(enum_flags_combining),
    Case(dataclasses_ops),
    Case(email_parse, (EMAIL_TEXT,)),
    Case(urllib_parse_cycling),
    Case(fnmatch_cycling),
    Case(logging_cycling_loggers),
    Case(warnings_caught),
    Case(socketpair_roundtrip, (PAYLOAD,)),
    Case(lzma_roundtrip, (PAYLOAD,)),
    Case(xml_etree, (XML_TEXT,)),
    Case(ast_compile_exec, (SOURCE,)),
    Case(deepcopy_nested),
    Case(fractions_and_statistics),
    Case(uuid_and_base64),
    Case(ipaddress_cycling),
    Case(array_and_memoryview),
    Case(difflib_ratio, (TEXT,)),
    Case(text_escaping),
    Case(heapq_and_sorting),
    Case(c_extension_cache_clean, needs="leakplanted"),
]
PLANTED = [
    Case(keep_object_every_call, kind="object"),
    Case(keep_object_every_10th_call, kind="object"),
    Case(keep_object_every_100th_call, kind="object"),
    Case(noisy_cache_with_slow_leak, kind="object"),
    Case(c_extension_cache_leaking, kind="reference", needs="leakplanted"),
]
CASES = CLEAN + PLANTED


# -- the C extension --------------------------------------------------------------------------------

def build_leakplanted(dest: pathlib.Path) -> pathlib.Path:
    """Compile leakplanted.c against the running interpreter's headers into ``dest``; return the .so path.

    Raises RuntimeError (with the reason) when gcc is missing or the build fails.
    """
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("building leakplanted.c needs gcc on PATH, found none; apt-get install gcc")
    target = dest / ("leakplanted" + sysconfig.get_config_var("EXT_SUFFIX"))
    cmd = [gcc, "-shared", "-fPIC", "-O1", "-I" + sysconfig.get_paths()["include"], str(PLANTED_SOURCE),
           "-o", str(target)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building leakplanted.c must succeed, got exit status {done.returncode} from "
                           f"{' '.join(cmd)}:\n{done.stderr}")
    return target


def load_leakplanted(path: pathlib.Path):
    """Import the built extension and make it the one the corpus functions call."""
    global leakplanted
    spec = importlib.util.spec_from_file_location("leakplanted", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    leakplanted = module
    return module


def missing(case: Case) -> str:
    """Why ``case`` cannot run here ("" when it can)."""
    if case.needs == "numpy" and np is None:
        return "needs numpy (pip install numpy)"
    if case.needs == "leakplanted" and leakplanted is None:
        return "needs the leakplanted extension (built from leakplanted.c with gcc)"
    return ""


@pytest.fixture(scope="module")
def planted_extension(tmp_path_factory):
    try:
        return load_leakplanted(build_leakplanted(tmp_path_factory.mktemp("leakplanted")))
    except RuntimeError as exc:
        pytest.skip(f"needs gcc: {exc}")


@pytest.fixture
def case_ready(request):
    """Build the extension when the case needs it, skip with the reason when something is missing,
    and drop what the planted leaks kept afterwards."""
    def ready(case: Case) -> None:
        if case.needs == "leakplanted":
            request.getfixturevalue("planted_extension")
        reason = missing(case)
        if reason:
            pytest.skip(reason)
    yield ready
    KEPT.clear()


# -- tests ----------------------------------------------------------------------------------------

def test_the_corpus_is_big_enough_and_named_once():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names)), f"every corpus function must be named once, got {names}"
    assert len(CLEAN) >= 40, f"issue 15 asks for at least 40 clean functions, got {len(CLEAN)}"


#: Build- and version-sensitive cases run on every CPython and build (debug builds included): numpy
#: is a release-build wheel whose own Py_INCREF/Py_DECREFs do not reach a debug build's
#: sys.gettotalrefcount() (it drifts by tens per call of the clean numpy functions, measured on
#: python3.14-dbg), and the C cache's twin is the control of the unnamed leak below.
CLEAN_PARAMS = [pytest.param(c, id=c.name, marks=[pytest.mark.every_python] if c.needs else []) for c in CLEAN]


@pytest.mark.parametrize("case", CLEAN_PARAMS)
def test_clean_function_is_not_flagged(case_ready, case):
    case_ready(case)
    report = leaks.check(case.fn, *case.args)
    assert not report.leaking, f"{case.name} is clean (its growth stops on its own), got:\n{report}"


@pytest.mark.parametrize("case", [c for c in PLANTED if c.needs != "leakplanted"],
                         ids=[c.name for c in PLANTED if c.needs != "leakplanted"])
def test_planted_leak_is_found(case_ready, case):
    case_ready(case)
    report = leaks.check(case.fn, *case.args)
    assert report.leaking and report.decided, f"{case.name} keeps one object() per call or fewer, got:\n{report}"
    assert case.kind in report.kinds, f"{case.name} must be reported as {case.kind!r}, got:\n{report}"


# The leak sits on an object only the extension's cache holds: refcount behaviour of such objects
# changes with the interpreter (immortal objects on 3.12+, borrowed stack references on 3.14,
# sys.gettotalrefcount() on debug builds), so this runs on every CPython.
@pytest.mark.every_python
def test_reference_leak_on_an_unnamed_cached_object_is_found(case_ready):
    case = PLANTED[-1]
    case_ready(case)
    case.fn(*case.args)   # creates the cached object (and leaks its first reference)
    leaked = leakplanted._cache["pin"]
    before = sys.getrefcount(leaked)
    report = leaks.check(case.fn, *case.args)
    text = str(report)
    assert sys.getrefcount(leaked) - before == report.calls   # the leak is real: one per call made
    assert report.leaking and report.decided, f"{case.name} leaks one reference per call, got:\n{text}"
    assert case.kind in report.kinds, f"{case.name} must be reported as {case.kind!r}, got:\n{text}"
    assert any(g.addr == id(leaked) for g in report.grown_objects), (
        f"the report must name the cached list at 0x{id(leaked):x} among the grown objects, got:\n{text}")


def test_cpu_hog_spins_while_the_test_runs(cpu_hog):
    """The fixture's child is really burning CPU (its CPU time grows with wall time)."""
    stat = pathlib.Path(f"/proc/{cpu_hog}/stat")
    if not stat.exists():
        pytest.skip("needs /proc to read the hog's CPU time")
    ticks_per_s = os.sysconf("SC_CLK_TCK")

    def cpu_s() -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks_per_s   # utime, stime

    before = cpu_s()
    deadline = time.monotonic() + 2.0
    while cpu_s() - before < 0.1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cpu_s() - before >= 0.1, f"the CPU hog (pid {cpu_hog}) must spin, got {cpu_s() - before:.2f} s of CPU in 2 s"


def test_cpu_hog_is_killed_even_when_the_test_fails(pytester):
    """A failing test using the fixture leaves no spinning child behind."""
    pytester.makeconftest((HERE.parent / "conftest.py").read_text())
    pid_file = pytester.path / "hog.pid"
    pytester.makepyfile(test_hogged=f"""
import pathlib

def test_fails(cpu_hog):
    pathlib.Path({str(pid_file)!r}).write_text(str(cpu_hog))
    assert False, "planted failure"
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)   # gone (reaped), not merely stopped
