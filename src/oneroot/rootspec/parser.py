"""Parse a `root=` spec into a `RootSpec` (pure; the initramfs has a twin in POSIX sh).

Grammar (the seed's lines parse verbatim, with the seed's meaning)::

    spec    = token *( ";" token )            layers bottom-most first
    token   = nfs | tmpfs | attrs             attrs applies to the layer just before it
    nfs     = server ":" path [ ":" list ]
    tmpfs   = "tmpfs" [ ":" list ]
    attrs   = ( "ro" | "rw" ) [ "," list ]    a standalone token must start with its mode
    list    = attr *( "," attr )
    attr    = "ro" | "rw" | key [ "=" value ]
    server  = hostname | ipv4 | "[" ipv6 "]"
    path    = "/" | 1*( "/" segment )        no empty, "." or ".." segments, no trailing "/"

    hostname  labels of 1-63 of A-Z a-z 0-9 "-", not starting or ending with "-"
    ipv4      four decimal octets 0-255 (a server of only digits and dots must be one)
    ipv6      hex digits, ":" and ".", at least two ":", at most one "::"
    segment   A-Z a-z 0-9 and . _ - + @ = ~ %
    key       A-Z a-z 0-9 _ -            value: A-Z a-z 0-9 and . _ - + % @ ~

A token is classified in this order: `tmpfs` or `tmpfs:…` is a tmpfs (so no NFS server may be
called `tmpfs`); `ro`, `rw`, `ro,…`, `rw,…` is an attribute token; anything else with a `:` is
an NFS layer; the rest is an unknown token.

Meaning: modes default to rw for the topmost layer and ro for all others; only the topmost
may be rw; a tmpfs may only be the topmost layer and is never ro; tmpfs takes the options
`size=`, `nr_inodes=` and `mode=` (each once, each with a value). `loop=erofs` or `loop=ext4`
(once) on an NFS layer makes its path an image file in the export: the directory is mounted
over NFS and the file loop-mounted as that filesystem (not for `/`; an erofs layer is never
rw). Everything else in a list is an NFS mount option, passed through in order.

Canonical form (`format_spec`): the bottom layer's attributes attached with `:`, every later
NFS layer's attributes as their own token, the mode always first:
`10.0.0.1:/:ro;10.0.0.1:/var/state/systems/node01;rw`, `…;ro;tmpfs:size=1g`.

Errors are found in one pass over the tokens, left to right (syntax), then one pass over the
layers, bottom to top (tmpfs or rw below the top); the first one found is raised as a
`RootSpecError` whose caret underlines the offending text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath

from oneroot.errors import RootSpecError
from oneroot.rootspec.spec import (
    LOOP_FILESYSTEMS,
    TMPFS_OPTION_KEYS,
    Layer,
    Mode,
    NfsLayer,
    RootSpec,
    TmpfsLayer,
)

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
SPEC_CHARS = _ALNUM | frozenset(";:,/._-+@=~%[]")
PATH_CHARS = _ALNUM | frozenset("/._-+@=~%")
KEY_CHARS = _ALNUM | frozenset("_-")
VALUE_CHARS = _ALNUM | frozenset("._-+%@~")
_HOST_CHARS = _ALNUM | frozenset("-")
_IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")

HINT_SERVER = "use a host name, an IPv4 address or a bracketed IPv6 address such as [fd00::1]"
HINT_IPV6 = "write an IPv6 server in brackets: [fd00::1]:/PATH"
HINT_OPTION = "options look like key or key=value (value: letters, digits and . _ - + % @ ~)"
HINT_TMPFS = "tmpfs takes size=, nr_inodes= and mode=, e.g. tmpfs:size=512m"
HINT_LOOP = ("loop= takes erofs (a read-only image file) or ext4 (a writable one), e.g. "
             "SERVER:/srv/blocks/lab@3.erofs:ro,loop=erofs")
HINT_TOKEN = ("a token is SERVER:/PATH[:OPTIONS], tmpfs[:OPTIONS], "
              "or ro|rw[,OPTIONS] for the layer before it")


@dataclass(slots=True)
class _Draft:
    """A layer while its tokens are still being read."""

    kind: str  # "nfs" or "tmpfs"
    start: int
    end: int
    server: str = ""
    path: str = ""
    mode: Mode | None = None
    mode_start: int = 0
    options: list[str] = field(default_factory=list)
    size: str | None = None
    tmpfs_keys: list[str] = field(default_factory=list)
    loop: str | None = None


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.drafts: list[_Draft] = []

    def fail(self, message: str, start: int, end: int, hint: str) -> RootSpecError:
        """An error whose caret covers text[start:end].

        An empty span (a missing thing) marks the delimiter just before it.
        """
        if end <= start:
            start = max(0, start - 1)
            end = start + 1
        return RootSpecError(message, text=self.text, start=start, end=end, hint=hint)

    def parse(self) -> RootSpec:
        text = self.text
        if text == "":
            raise self.fail("empty root= spec", 0, 0,
                            "write at least one layer, e.g. root=SERVER:/PATH")
        for index, char in enumerate(text):
            if char not in SPEC_CHARS:
                raise self.fail(f"invalid character '{char}'", index, index + 1,
                                "use letters, digits and ; : , / . _ - + @ = ~ % [ ]")
        start = 0
        for token in text.split(";"):
            self.token(token, start)
            start += len(token) + 1
        return self.check_layers()

    def token(self, token: str, start: int) -> None:
        end = start + len(token)
        if token == "":
            raise self.fail("empty layer", start, start, "remove the extra ';'")
        if token == "tmpfs" or token.startswith("tmpfs:"):
            draft = _Draft(kind="tmpfs", start=start, end=end)
            self.drafts.append(draft)
            if token != "tmpfs":
                self.attrs(draft, token[6:], start + 6)
        elif token in ("ro", "rw") or token.startswith(("ro,", "rw,")):
            if not self.drafts:
                raise self.fail("mode with no layer before it", start, end,
                                "put the mode after a layer: SERVER:/PATH;ro or SERVER:/PATH:ro")
            self.attrs(self.drafts[-1], token, start)
        elif ":" in token:
            self.nfs(token, start)
        else:
            raise self.fail(f"unknown token '{token}'", start, end, HINT_TOKEN)

    def nfs(self, token: str, start: int) -> None:
        if token.startswith("["):
            close = token.find("]")
            if close < 0:
                raise self.fail("unclosed '[' in server", start, start + len(token), HINT_IPV6)
            server = token[1:close]
            after = close + 1
            if token[after:after + 1] != ":":
                # point at the stray character, or at the `]` when the token ends there
                stray_end = start + min(after + 1, len(token))
                raise self.fail("expected ':' after ']'", start + after, stray_end, HINT_IPV6)
            if not is_ipv6(server):
                raise self.fail(f"bad server '[{server}]'", start, start + after, HINT_SERVER)
        else:
            after = token.index(":")
            server = token[:after]
            if server == "":
                raise self.fail("missing server before ':'", start, start + 1, HINT_SERVER)
            if not is_host(server):
                raise self.fail(f"bad server '{server}'", start, start + after, HINT_SERVER)
        rest_start = start + after + 1
        path, colon, attrs = token[after + 1:].partition(":")
        self.check_path(path, rest_start)
        draft = _Draft(kind="nfs", start=start, end=start + len(token), server=server, path=path)
        self.drafts.append(draft)
        if colon:
            self.attrs(draft, attrs, rest_start + len(path) + 1)

    def check_path(self, path: str, start: int) -> None:
        if not path.startswith("/"):
            raise self.fail(f"path '{path}' is not absolute", start, start + len(path),
                            "a layer is SERVER:/ABSOLUTE/PATH; " + HINT_IPV6)
        for index, char in enumerate(path):
            if char not in PATH_CHARS:
                raise self.fail(f"invalid character '{char}' in path", start + index,
                                start + index + 1,
                                "path characters are letters, digits and / . _ - + @ = ~ %")
        if path == "/":
            return
        offset = 1
        for segment in path[1:].split("/"):
            if segment == "":
                raise self.fail("empty path component", start + offset - 1, start + offset,
                                "remove the doubled or trailing '/'")
            if segment in (".", ".."):
                raise self.fail(f"'{segment}' component in path", start + offset,
                                start + offset + len(segment),
                                "write the path without '.' or '..' components")
            offset += len(segment) + 1

    def attrs(self, draft: _Draft, text: str, start: int) -> None:
        for attr in text.split(","):
            end = start + len(attr)
            if attr == "":
                raise self.fail("empty option", start, start, "remove the extra ',' or ':'")
            if attr in ("ro", "rw"):
                if draft.mode is not None:
                    raise self.fail("two modes for one layer", start, end,
                                    "give each layer one mode: ro or rw")
                if draft.kind == "tmpfs" and attr == "ro":
                    raise self.fail("tmpfs cannot be read-only", start, end,
                                    "a tmpfs is always the writable top; drop 'ro'")
                draft.mode = Mode(attr)
                draft.mode_start = start
            else:
                self.option(draft, attr, start)
            start = end + 1

    def option(self, draft: _Draft, attr: str, start: int) -> None:
        end = start + len(attr)
        key, equals, value = attr.partition("=")
        if (key == "" or not set(key) <= KEY_CHARS
                or (equals and (value == "" or not set(value) <= VALUE_CHARS))):
            raise self.fail(f"bad option '{attr}'", start, end, HINT_OPTION)
        if draft.kind == "nfs":
            if key == "loop":
                self.loop(draft, value, attr, start)
            draft.options.append(attr)
            return
        if key not in TMPFS_OPTION_KEYS:
            raise self.fail(f"unknown tmpfs option '{key}'", start, end, HINT_TMPFS)
        if not equals:
            raise self.fail(f"tmpfs option '{key}' needs a value", start, end, HINT_TMPFS)
        if key in draft.tmpfs_keys:
            raise self.fail(f"tmpfs option '{key}' given twice", start, end,
                            "give each tmpfs option once")
        draft.tmpfs_keys.append(key)
        if key == "size":
            draft.size = value
        else:
            draft.options.append(attr)

    def loop(self, draft: _Draft, value: str, attr: str, start: int) -> None:
        end = start + len(attr)
        if value not in LOOP_FILESYSTEMS:
            raise self.fail(f"loop= takes erofs or ext4, not '{attr}'", start, end, HINT_LOOP)
        if draft.loop is not None:
            raise self.fail("loop given twice", start, end, "give each layer one loop=")
        if draft.path == "/":
            raise self.fail("loop= names an image file, not '/'", start, end, HINT_LOOP)
        draft.loop = value

    def check_layers(self) -> RootSpec:
        layers: list[Layer] = []
        top = len(self.drafts) - 1
        for index, draft in enumerate(self.drafts):
            if index < top and draft.kind == "tmpfs":
                raise self.fail("tmpfs below the top layer", draft.start, draft.end,
                                "a tmpfs can only be the topmost (last) layer")
            if index < top and draft.mode is Mode.RW:
                raise self.fail("rw below the top layer", draft.mode_start, draft.mode_start + 2,
                                "only the topmost (last) layer may be rw; make this one ro")
            if draft.loop == "erofs" and (draft.mode is Mode.RW or (
                    draft.mode is None and index == top)):
                start, end = ((draft.mode_start, draft.mode_start + 2) if draft.mode
                              else (draft.start, draft.end))
                raise self.fail("an erofs image is read-only", start, end,
                                "make it ro and put a writable layer on top "
                                "(an ext4 file or a tmpfs)")
            if draft.kind == "tmpfs":
                layers.append(TmpfsLayer(size=draft.size, options=tuple(draft.options)))
            else:
                mode = draft.mode or (Mode.RW if index == top else Mode.RO)
                layers.append(NfsLayer(server=draft.server, path=PurePosixPath(draft.path),
                                       mode=mode, options=tuple(draft.options)))
        return RootSpec(layers=tuple(layers))


def is_host(text: str) -> bool:
    """A host name or a dotted IPv4 address (all digits and dots must be a valid IPv4)."""
    if set(text) <= frozenset("0123456789."):
        octets = text.split(".")
        return len(octets) == 4 and all(
            1 <= len(octet) <= 3 and int(octet) <= 255 for octet in octets)
    return all(
        1 <= len(label) <= 63 and set(label) <= _HOST_CHARS
        and not label.startswith("-") and not label.endswith("-")
        for label in text.split("."))


def is_ipv6(text: str) -> bool:
    """A loose check, the same the initramfs can afford; the kernel has the last word."""
    return (set(text) <= _IPV6_CHARS and text.count(":") >= 2
            and ":::" not in text and text.count("::") <= 1)


def parse(text: str) -> RootSpec:
    """Parse a `root=` value; raise `RootSpecError` with a caret line if it is not valid."""
    return _Parser(text).parse()
