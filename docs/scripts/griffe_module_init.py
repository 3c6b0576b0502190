"""A griffe extension: constructor signatures for Equinox modules without `__init__`.

An `eqx.Module` that declares its fields (with defaults and converters, as the
Lagrangian families do) gets its `__init__` from the dataclass machinery at run time,
which griffe, reading the source statically, does not see: the API page would show the
class without a signature. This extension writes that `__init__` into griffe's model:
one parameter per annotated field, base classes' fields first (the dataclass order),
the default from `eqx.field(default=...)`, and the annotation of the field's converter
argument when it has one (what a caller may pass, as type checkers read it).

Used by `mkdocs.yml` (`extensions:` of the mkdocstrings Python handler).
"""

import griffe


def _field_default(value):
    """The default of a field whose value is `eqx.field(..., default=d)` or `d`."""
    if value is None:
        return None
    if isinstance(value, griffe.ExprCall):
        for argument in value.arguments:
            if isinstance(argument, griffe.ExprKeyword) and argument.name == "default":
                return argument.value
        return None
    return value


def _converter_annotation(cls: griffe.Class, value):
    if not isinstance(value, griffe.ExprCall):
        return None
    for argument in value.arguments:
        if isinstance(argument, griffe.ExprKeyword) and argument.name == "converter":
            name = getattr(argument.value, "name", None)
            function = cls.module.members.get(name) if name else None
            function = getattr(function, "final_target", function)
            if isinstance(function, griffe.Function) and function.parameters:
                return function.parameters[0].annotation
    return None


def _lineage(cls: griffe.Class, pkg: griffe.Module) -> list[griffe.Class]:
    """`cls` and its base classes inside the package, bases first (depth first)."""
    out: list[griffe.Class] = []
    for base in cls.bases:
        path = getattr(base, "canonical_path", str(base))
        if not path.startswith(pkg.path + "."):
            continue
        try:
            found = pkg[path[len(pkg.path) + 1 :]]
        except KeyError:
            continue
        found = getattr(found, "final_target", found)
        if isinstance(found, griffe.Class):
            out += [c for c in _lineage(found, pkg) if c not in out]
    return [*out, cls]


def _fields(
    cls: griffe.Class, pkg: griffe.Module
) -> list[tuple[str, griffe.Attribute]]:
    """Annotated instance fields, base classes' first, each name once."""
    fields: dict[str, griffe.Attribute] = {}
    for base in _lineage(cls, pkg):
        for name, member in base.members.items():
            member = getattr(member, "final_target", member)
            if (
                isinstance(member, griffe.Attribute)
                and member.annotation is not None
                # A field with a default is a class attribute; one without is an
                # annotation only, which griffe labels an instance attribute.
                and member.labels & {"class-attribute", "instance-attribute"}
                and not str(member.annotation).startswith(("ClassVar", "AbstractVar"))
            ):
                fields[name] = member
    return list(fields.items())


_LABEL = "dataclass-init"


class ModuleInit(griffe.Extension):
    """Adds the dataclass `__init__` of field-declared Equinox modules."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        for cls in _classes(pkg):
            inherited = cls.all_members.get("__init__")
            if inherited is not None and _LABEL not in inherited.labels:
                continue  # a hand-written `__init__`, its own or a base class's
            if not any(
                str(base).endswith(
                    ("Module", "Lagrangian", "Synapse", "Adjoint", "Solver")
                )
                for base in cls.bases
            ):
                continue
            fields = _fields(cls, pkg)  # none: a parameter-free module, `LIdentity()`
            parameters = [
                griffe.Parameter(
                    "self", kind=griffe.ParameterKind.positional_or_keyword
                )
            ]
            for name, field in fields:
                annotation = _converter_annotation(field.parent, field.value)  # type: ignore[arg-type]
                parameters.append(
                    griffe.Parameter(
                        name,
                        annotation=annotation or field.annotation,
                        kind=griffe.ParameterKind.positional_or_keyword,
                        default=_field_default(field.value),
                    )
                )
            init = griffe.Function(
                "__init__",
                parent=cls,
                parameters=griffe.Parameters(*parameters),
                returns="None",
            )
            init.labels.add(_LABEL)
            cls.set_member("__init__", init)


def _classes(module: griffe.Module):
    for member in module.members.values():
        if member.is_alias:
            continue
        if isinstance(member, griffe.Module):
            yield from _classes(member)
        elif isinstance(member, griffe.Class):
            yield member
