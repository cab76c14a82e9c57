"""The worked migration (migrate/README.md): the legacy Flask inventory on scan's proto, in stages."""
