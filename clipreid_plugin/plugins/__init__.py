"""Plugins shipped with the toolkit. Each reaches the host only through its public seams and
registers itself through the ``clipreid_plugin.plugins`` entry-point group, exactly as a
third-party package would (see docs/ARCHITECTURE.md, "Writing a plugin")."""
