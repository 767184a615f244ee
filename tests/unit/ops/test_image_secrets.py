"""What a copy of a live system brings into an image nodes read as it is
(`oneroot.ops.image_secrets`): found inside the image, never through the server's own files."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from oneroot.model.cluster import Image, Settings
from oneroot.ops.image_secrets import copied_secrets, read_as_it_is

SHADOW = """root:$y$j9T$abc$def:19000:0:99999:7:::
daemon:*:19000:0:99999:7:::
sshd:!:19000::::::
nobody:!*:19000::::::
backup:!!:19000::::::
old:!$6$salt$hash:19000::::::
x:x:19000::::::
broken line
"""


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_a_copy_of_a_live_root_is_told_from_a_built_image(tmp_path: Path) -> None:
    copy = _tree(tmp_path / "copy", {
        "etc/shadow": SHADOW, "etc/gshadow": "root:*::\nadm:*::\n",
        "etc/ssh/ssh_host_ed25519_key": "private", "etc/ssh/ssh_host_ed25519_key.pub": "pub",
        "etc/ssh/ssh_host_rsa_key": "private", "etc/ssh/sshd_config": "",
        "etc/krb5.keytab": "k", "root/.ssh/authorized_keys": "ssh-ed25519 AAAA",
        "home/alice/.ssh/id_ed25519": "private", "home/bob/.profile": ""})
    assert copied_secrets(copy) == (
        "etc/shadow has password hashes: root, old",
        "SSH host private keys: etc/ssh/ssh_host_ed25519_key, etc/ssh/ssh_host_rsa_key",
        "a Kerberos keytab: etc/krb5.keytab",
        "SSH user keys: root/.ssh, home/alice/.ssh")
    built = _tree(tmp_path / "built", {  # mmdebstrap's: no hash, no keys, empty /root
        "etc/shadow": "root:*:19000:0:99999:7:::\n_apt:*:19000::::::\n", "etc/ssh/moduli": "",
        "root/.bashrc": "", "root/.ssh/.keep": ""})
    (built / "root/.ssh/.keep").unlink()
    assert copied_secrets(built) == ()
    assert copied_secrets(tmp_path / "none") == ()


def test_links_are_followed_inside_the_image_never_to_the_servers_files(tmp_path: Path) -> None:
    """An image whose /etc (or /root) is an absolute link names its own directory: read on
    the server, it would report (and read) the server's own shadow and keys."""
    server = _tree(tmp_path / "server", {"etc/shadow": SHADOW,
                                         "etc/ssh/ssh_host_rsa_key": "private",
                                         "root/.ssh/id_rsa": "private"})
    image = tmp_path / "img"
    image.mkdir()
    (image / "etc").symlink_to(server / "etc")
    (image / "root").symlink_to(server / "root")
    assert copied_secrets(image) == ()
    (image / "etc").unlink()
    (image / "etc").symlink_to("/etc")  # a loop inside the image
    assert copied_secrets(image) == ()
    inside = _tree(image / "data", {"shadow": SHADOW})
    (image / "etc").unlink()
    (image / "etc").mkdir()
    (image / "etc/shadow").symlink_to("/data/shadow")  # the image's own file: reported
    assert copied_secrets(image) == ("etc/shadow has password hashes: root, old",)
    assert inside.is_dir()


def test_only_images_read_as_they_are_are_looked_at() -> None:
    settings = Settings()
    assert not read_as_it_is(Image(name="live", root=PurePosixPath("/")), settings)
    holds_state = PurePosixPath(settings.state_dir).parents[1]  # a root with the state dir
    assert not read_as_it_is(Image(name="view", root=holds_state), settings)
    assert read_as_it_is(Image(name="copy", root=PurePosixPath("/srv/images/rootcopy")),
                         settings)
