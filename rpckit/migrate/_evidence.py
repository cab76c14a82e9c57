"""What a view's source says about its route: JSON or not, blockers, query parameters. Pure.

:func:`read_view_source` parses Python source text (a view function, or the
methods of a class-based view) and looks for the calls and attributes that
decide how a route can move:

* JSON: ``jsonify``, ``request.get_json``/``request.json``, a returned dict or list;
* blockers: ``render_template*``/``stream_template*`` (HTML), ``request.form``
  / ``request.values`` (form bodies), ``request.files`` (multipart),
  ``send_file``/``send_from_directory`` (file downloads), ``stream_with_context``
  or a ``yield`` in the view (streaming);
* query parameters read as ``request.args.get("name", type=int)`` or
  ``request.args["name"]``;
* literal success statuses (``return body, 201``, ``response.status_code = 201``);
* schema calls: ``NAME.load(...)``/``loads``/``validate`` (the request body) and
  ``NAME.dump(...)``/``dumps`` (the response), ``many=True`` on the call or on
  ``NAME(many=True)``.

Only the view's own body is read, not the helpers it calls: samples fill in
what the source does not show.
"""

from __future__ import annotations

import ast
import textwrap

from rpckit.migrate._routes_in import Evidence, SchemaUse

__all__ = ["read_view_source"]

_HTML_CALLS = frozenset(
    {"render_template", "render_template_string", "stream_template", "stream_template_string"}
)
_FILE_CALLS = frozenset({"send_file", "send_from_directory"})
_TYPE_NAMES = {"int": "int", "float": "float", "bool": "bool", "str": "string"}
#: Schema methods (marshmallow's names) and the side of the exchange they read or write.
_SCHEMA_CALLS = {
    "load": "request",
    "loads": "request",
    "validate": "request",
    "dump": "response",
    "dumps": "response",
}


def read_view_source(source: str) -> Evidence:
    """The :class:`Evidence` in ``source`` (a def or a class); empty when it does not parse."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return Evidence()
    visitor = _Visitor()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            visitor.visit_view(node)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    visitor.visit_view(item)
    return Evidence(
        json=tuple(dict.fromkeys(visitor.json)),
        blockers=tuple(dict.fromkeys(visitor.blockers)),
        query=tuple(visitor.query.items()),
        statuses=tuple(dict.fromkeys(visitor.statuses)),
        reads_body=visitor.reads_body,
        schemas=tuple(dict.fromkeys(visitor.schemas)),
    )


def _name(node: ast.AST) -> str:
    """``request.args.get`` for an attribute chain, ``jsonify`` for a name, else ``""``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        parent = _name(node.value)
        return f"{parent}.{node.attr}" if parent else node.attr
    return ""


def _says_many(call: ast.Call) -> bool:
    return any(
        k.arg == "many" and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    )


class _Visitor(ast.NodeVisitor):
    def __init__(self) -> None:
        self.json: list[str] = []
        self.blockers: list[str] = []
        self.query: dict[str, str] = {}
        self.statuses: list[int] = []
        self.reads_body = False
        self.schemas: list[SchemaUse] = []

    def visit_view(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for statement in node.body:
            self.visit(statement)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        return  # a nested function is not the view (a generator defined inside is checked below)

    def visit_Yield(self, node: ast.Yield) -> None:
        self.blockers.append("streaming: the view yields its response")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = _name(node.func)
        last = name.rsplit(".", 1)[-1]
        if last in _HTML_CALLS:
            self.blockers.append(f"html: {last}")
        elif last in _FILE_CALLS:
            self.blockers.append(f"file download: {last}")
        elif last == "stream_with_context":
            self.blockers.append("streaming: stream_with_context")
        elif last == "jsonify":
            self.json.append("jsonify")
        elif name.endswith("request.get_json"):
            self.json.append("request.get_json")
            self.reads_body = True
        elif name.endswith("request.args.get") or name.endswith("request.args.getlist"):
            self._query_call(node, repeated=name.endswith("getlist"))
        elif last == "Response" and node.args and isinstance(node.args[0], ast.Call):
            inner = _name(node.args[0].func).rsplit(".", 1)[-1]
            if inner in ("generate", "stream_with_context") or inner.startswith("iter"):
                self.blockers.append(f"streaming: Response({inner}(...))")
        if isinstance(node.func, ast.Attribute) and node.func.attr in _SCHEMA_CALLS:
            self._schema_call(node, node.func)
        self.generic_visit(node)

    def _schema_call(self, node: ast.Call, method: ast.Attribute) -> None:
        receiver = method.value
        many = _says_many(node)
        if isinstance(receiver, ast.Call):  # ItemSchema(many=True).dump(items)
            many = many or _says_many(receiver)
            receiver = receiver.func
        name = _name(receiver)
        if name and name != "json":  # json.loads/dumps: not a schema
            self.schemas.append(SchemaUse(name, _SCHEMA_CALLS[method.attr], many))

    def _query_call(self, node: ast.Call, *, repeated: bool) -> None:
        if not node.args or not isinstance(node.args[0], ast.Constant):
            return
        key = node.args[0].value
        if not isinstance(key, str):
            return
        kind = "string"
        for keyword in node.keywords:
            if keyword.arg == "type" and isinstance(keyword.value, ast.Name):
                kind = _TYPE_NAMES.get(keyword.value.id, "string")
        self.query.setdefault(key, kind)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = _name(node)
        if name.endswith("request.form") or name.endswith("request.values"):
            self.blockers.append(f"form: {name.rsplit('.', 2)[-2]}.{node.attr}")
        elif name.endswith("request.files"):
            self.blockers.append("multipart: request.files")
        elif name.endswith("request.json"):
            self.json.append("request.json")
            self.reads_body = True
        elif name.endswith("request.data") or name.endswith("request.get_data"):
            self.reads_body = True
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if _name(node.value).endswith("request.args") and isinstance(node.slice, ast.Constant):
            key = node.slice.value
            if isinstance(key, str):
                self.query.setdefault(key, "string")
        self.generic_visit(node)

    def visit_Return(self, node: ast.Return) -> None:
        value = node.value
        if isinstance(value, (ast.Dict, ast.List)):
            self.json.append("returns a dict or list")
        if isinstance(value, ast.Tuple) and len(value.elts) >= 2:
            first, status = value.elts[0], value.elts[1]
            if isinstance(first, (ast.Dict, ast.List)):
                self.json.append("returns a dict or list")
            if (
                isinstance(status, ast.Constant)
                and isinstance(status.value, int)
                and 200 <= status.value < 300
            ):
                self.statuses.append(status.value)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            if (
                isinstance(target, ast.Attribute)
                and target.attr == "status_code"
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, int)
                and 200 <= node.value.value < 300
            ):
                self.statuses.append(node.value.value)
        self.generic_visit(node)
