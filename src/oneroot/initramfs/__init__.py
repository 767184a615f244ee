"""The node initramfs: the cpio writer, distro kernels and their modules, a static busybox,
and the builder that assembles the dracut-style modules under `modules/` (see builder.py)."""
