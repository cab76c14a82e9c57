"""``rpckit new``: scaffold a complete service, and take later template changes into it.

The parts, from pure to I/O (design: ``docs/scaffold.md``):

* :mod:`rpckit.scaffold._answers` -- the inputs, every name derived from them,
  their checks, and the answers file (``.rpckit/answers.toml``);
* :mod:`rpckit.scaffold._template` -- a template: ``*.jinja`` files and the
  ``template.toml`` manifest that versions them; rpckit's own one ships as
  package data in ``templates/service``;
* :mod:`rpckit.scaffold._render` -- template + answers -> ``{path: text}``, with Jinja2;
* :mod:`rpckit.scaffold._merge` -- the line-based three-way merge (diff3);
* :mod:`rpckit.scaffold._update` -- what an update does to each file;
* :mod:`rpckit.scaffold._writer` -- the disk: atomic creation, reading back, applying;
* :mod:`rpckit.scaffold._command` -- the ``rpckit new`` verb.

Nothing here is imported by ``import rpckit``; Jinja2 is imported only to render
(``pip install 'rpckit[new]'``).
"""
