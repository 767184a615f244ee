"""Round trips: parse(format(s)) == s, and format(parse(x)) is a fixed point."""

from __future__ import annotations

from pathlib import PurePosixPath

from hypothesis import given
from hypothesis import strategies as st

from oneroot.rootspec import Mode, NfsLayer, RootSpec, TmpfsLayer, format_spec, parse
from oneroot.rootspec.spec import Layer

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
ALNUM = LETTERS + "0123456789"

label = st.builds(
    lambda first, middle: first + middle,
    st.sampled_from(LETTERS),
    st.text(ALNUM + "-", max_size=8).filter(lambda s: not s.endswith("-")),
)
hostname = st.lists(label, min_size=1, max_size=3).map(".".join).filter(lambda h: h != "tmpfs")
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.sampled_from(["fd00::1", "::1", "2001:db8::42", "fe80::1:2:3", "::ffff:10.0.0.1"])
server = st.one_of(hostname, ipv4, ipv6)
segment = st.text(ALNUM + "._-+@=~%", min_size=1, max_size=10).filter(
    lambda s: s not in (".", ".."))
path = st.lists(segment, max_size=4).map(lambda parts: PurePosixPath("/" + "/".join(parts)))
value = st.text(ALNUM + "._-+%@~", min_size=1, max_size=6)
nfs_option = st.one_of(
    st.text(ALNUM + "_-", min_size=1, max_size=8).filter(lambda k: k not in ("ro", "rw")),
    st.builds(lambda k, v: f"{k}={v}", st.text(ALNUM + "_-", min_size=1, max_size=8), value),
)
nfs_options = st.lists(nfs_option, max_size=3).map(tuple)


def nfs_layer(mode: st.SearchStrategy[Mode]) -> st.SearchStrategy[NfsLayer]:
    return st.builds(lambda s, p, m, o: NfsLayer(server=s, path=p, mode=m, options=o),
                     server, path, mode, nfs_options)


def keyed(key: str) -> st.SearchStrategy[str]:
    return value.map(lambda v: f"{key}={v}")


tmpfs_layer = st.builds(
    lambda size, others: TmpfsLayer(size=size, options=others),
    st.none() | value,
    st.lists(st.sampled_from(["nr_inodes", "mode"]), unique=True, max_size=2).flatmap(
        lambda keys: st.tuples(*[keyed(k) for k in keys])),
)
root_specs = st.builds(
    lambda lowers, top: RootSpec(layers=(*lowers, top)),
    st.lists(nfs_layer(st.just(Mode.RO)), max_size=3),
    st.one_of(nfs_layer(st.sampled_from(Mode)), tmpfs_layer),
)


@given(root_specs)
def test_parse_inverts_format(spec: RootSpec) -> None:
    assert parse(format_spec(spec)) == spec


def spelled(layer: Layer, is_top: bool, attached: bool, explicit: bool) -> list[str]:
    """One way a person might write the layer: attrs attached or standalone, defaults omitted."""
    if isinstance(layer, TmpfsLayer):
        head, mode, default, options = "tmpfs", Mode.RW, True, layer.all_options
    else:
        head, mode, options = layer.source, layer.mode, layer.options
        default = mode is (Mode.RW if is_top else Mode.RO)
    attrs = [*options]
    if explicit or not default or not attached:
        attrs.insert(0 if not attached else len(attrs), mode.value)
    if not options and default and not explicit:
        return [head]
    if attached:
        return [f"{head}:{','.join(attrs)}"]
    return [head, ",".join(attrs)]


@given(root_specs, st.data())
def test_format_of_parse_is_a_fixed_point(spec: RootSpec, data: st.DataObject) -> None:
    tokens: list[str] = []
    for index, layer in enumerate(spec.layers):
        is_top = index == len(spec.layers) - 1
        tokens += spelled(layer, is_top, data.draw(st.booleans()), data.draw(st.booleans()))
    text = ";".join(tokens)
    parsed = parse(text)
    assert parsed == spec
    canonical = format_spec(parsed)
    assert format_spec(parse(canonical)) == canonical
