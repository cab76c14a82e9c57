"""The worked migration (migrate/README.md): the legacy inventory on scan's proto, in stages."""
