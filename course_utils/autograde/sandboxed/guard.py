"""Guards grading inside a sandboxed kernel against the notebook's own code.

Started in place of ``ipykernel_launcher``, before any student code, it installs an audit hook
(which Python lets no one remove) that refuses student code the ways into the graders' running
state: frames (``sys._getframe``, ``inspect.stack``, traceback and generator frames), the
garbage collector's object lists, ``ctypes``, tracing hooks, and swapping the code of functions
it did not write. ``changed()`` names what was patched since ``baseline()``: the graders'
modules and classes, and the library functions they rely on (``torch``, ``math``, ``numpy``,
``builtins``); ``answer()`` gives the same names as JSON (``application/json``). nbgrader's process (``course_utils.autograde.execute.SafeExecute``) asks for
both through the kernel's own protocol and scores a test cell 0 (``tampered``) when anything
changed.

Example:
    >>> baseline(); changed()
    []
"""

from __future__ import annotations

import inspect
import os
import sys
import types
from typing import Any

# Modules whose attributes the graders rely on; every ``course_utils`` module is added.
WATCHED_MODULES = ("builtins", "math", "operator", "functools", "torch", "torch.nn",
                   "torch.nn.functional", "torch.optim", "torch.utils.data", "numpy",
                   "IPython.display", "IPython.core.display_functions")
# Classes whose methods the graders rely on, beside the classes of the graders' modules.
WATCHED_CLASSES = ("torch.Tensor", "torch.nn.Module", "torch.nn.Parameter",
                   "torch.optim.Optimizer", "torch.utils.data.DataLoader")
# Names the IPython kernel itself sets and removes in ``builtins`` while it runs cells.
_KERNEL_BUILTINS = frozenset({"display", "get_ipython", "exit", "quit", "_", "__", "___",
                              "input", "raw_input",
                              "__IPYTHON__", "__builtin__", "_ih", "_oh", "_dh", "In", "Out"})
# Audit events that give access to frames, objects or memory of running code.
_REFUSED_EVENTS = frozenset({"sys._getframe", "sys._current_frames", "sys.settrace",
                             "sys.setprofile", "gc.get_referrers", "gc.get_referents",
                             "gc.get_objects"})
_FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_code"})
_FUNCTION_ATTRIBUTES = frozenset({"__code__", "__defaults__", "__kwdefaults__"})
_RELAYS = frozenset({"inspect", "traceback", "ctypes"})


def _protected(value: Any) -> bool:
    module = getattr(value, "__module__", None) or ""
    return module.split(".")[0] in ("course_utils", "torch", "numpy", "math", "builtins")


class Refused(RuntimeError):
    """What student code gets when it reaches for the graders' running state."""


def _make_hook() -> Any:
    """The audit hook. Everything it uses is bound in its closure, where notebook code cannot
    rebind it (module globals it could)."""
    # The whole course package (the graders), not only this folder of it.
    here = os.path.dirname(os.path.abspath(sys.modules["course_utils"].__file__))
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    trusted = tuple({os.path.realpath(p) + os.sep for p in prefixes}
                    | {p + os.sep for p in prefixes} | {here + os.sep})
    getframe, refused_events, relays = sys._getframe, _REFUSED_EVENTS, _RELAYS
    frame_attributes, function_attributes = _FRAME_ATTRIBUTES, _FUNCTION_ATTRIBUTES
    protected, error = _protected, Refused
    busy = [False]

    def is_student(frame: types.FrameType) -> bool:
        filename = frame.f_code.co_filename
        return not filename.startswith("<frozen ") and not filename.startswith(trusted)

    def deciding_frame(frame: types.FrameType | None) -> types.FrameType | None:
        # Library helpers that only pass a request on: the frame that called them decides.
        while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in relays:
            frame = frame.f_back
        return frame

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if busy[0]:
            return
        if not (event in refused_events or event.startswith("ctypes.")
                or (event == "object.__getattr__" and args[1] in frame_attributes)
                or (event == "object.__setattr__" and args[1] in function_attributes
                    and protected(args[0]))):
            return
        busy[0] = True
        try:
            caller = deciding_frame(getframe(1))  # 0 is this hook
            refuse = caller is not None and is_student(caller)
        finally:
            busy[0] = False
        if refuse:
            what = args[1] if event.startswith("object.") else "frames, objects or memory"
            raise error(f"During autograding, notebook code may not use {event} ({what} of "
                        "the running program).")

    return hook


def _watched() -> dict[str, Any]:
    """Every watched module and class, by name, as they are now."""
    found: dict[str, Any] = {}
    names = list(WATCHED_MODULES) + [name for name in list(sys.modules)
                                     if name.split(".")[0] == "course_utils"]
    for name in names:
        if name in sys.modules:
            module = sys.modules[name]
            found[name] = module
            for attribute, value in list(vars(module).items()):
                if isinstance(value, type) and value.__module__ == name:
                    found[f"{name}.{attribute}"] = value
    for dotted in WATCHED_CLASSES:
        module, _, attribute = dotted.rpartition(".")
        if module in sys.modules:
            found[dotted] = getattr(sys.modules[module], attribute, None)
    return found


def _outlets() -> dict[str, Any]:
    """The objects a report travels through to nbgrader: IPython's display publisher and
    display hook, and the kernel's message session."""
    found: dict[str, Any] = {}
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        found.update({"shell": shell, "shell.display_pub": shell.display_pub,
                      "shell.displayhook": shell.displayhook})
        kernel = getattr(shell, "kernel", None)
        if kernel is not None:
            found.update({"kernel": kernel, "kernel.session": kernel.session})
    return found


def _entries() -> dict[str, Any]:
    """Every watched value, by name; for a class also its attribute names (a new one can
    shadow an inherited method), for an outlet whether the object shadows a method."""
    entries: dict[str, Any] = {}
    builtins = sys.modules["builtins"]
    for name, holder in _watched().items():
        entries[name] = holder
        if isinstance(holder, type):
            entries[f"{name}{_NAMES}"] = tuple(sorted(vars(holder)))
            for attribute, value in list(vars(holder).items()):
                entries[f"{name}.{attribute}"] = value
            continue
        for attribute, value in list(vars(holder).items()):
            if attribute.startswith("__") and holder is not builtins:
                continue
            if holder is builtins and attribute in _KERNEL_BUILTINS:
                continue
            entries[f"{name}.{attribute}"] = value
            if name.startswith("course_utils") and isinstance(value, dict):
                entries.update(_registry_entries(f"{name}.{attribute}", value))
    for name, outlet in _outlets().items():
        cls, own = type(outlet), getattr(outlet, "__dict__", {})
        entries[name], entries[f"{name}.__class__"] = outlet, cls
        for attribute in dir(cls):
            static = inspect.getattr_static(cls, attribute, None)
            if not attribute.startswith("__") and callable(static):
                entries[f"{name}.{attribute}"] = static
                entries[f"{name}.{attribute} (on the object)"] = own.get(attribute)
    return entries


def _registry_entries(name: str, registry: dict) -> dict[str, Any]:
    """The functions and course objects a module's dict holds (the exercises' registry), and
    those objects' attributes (an exercise's grader)."""
    entries: dict[str, Any] = {}
    for key, value in list(registry.items()):
        if isinstance(value, types.FunctionType):
            entries[f"{name}[{key!r}]"] = value
        elif type(value).__module__.split(".")[0] == "course_utils" \
                and hasattr(value, "__dict__"):
            entries[f"{name}[{key!r}]"] = value
            for attribute, inner in list(vars(value).items()):
                entries[f"{name}[{key!r}].{attribute}"] = inner
    return entries


def _identity(value: Any) -> tuple[int, ...]:
    """What changes when a value is replaced, or a function's code or defaults are."""
    if isinstance(value, tuple) and all(isinstance(item, str) for item in value):
        return (hash(value),)
    if isinstance(value, property):
        return (id(value), id(value.fget), id(value.fset))
    if isinstance(value, types.FunctionType):
        return (id(value), id(value.__code__), id(value.__defaults__), id(value.__kwdefaults__))
    return (id(value),)


_LIBRARIES = tuple({os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix)}
                   | {p + os.sep for p in (sys.prefix, sys.base_prefix)})


def _library_wrapper(value: Any, original: int) -> bool:
    """True for a library's own wrapper around the original (``torch._dynamo`` wraps
    ``torch.manual_seed`` when it is first imported)."""
    code = getattr(value, "__code__", None)
    if code is None or not code.co_filename.startswith(_LIBRARIES):
        return False
    for _ in range(5):
        value = getattr(value, "__wrapped__", None)
        if value is None:
            return False
        if id(value) == original:
            return True
    return False


def _student_made(value: Any) -> bool:
    """True for a callable the notebook wrote (libraries add methods to classes lazily)."""
    for inner in ("fget", "__func__"):
        if isinstance(value, (property, classmethod, staticmethod)):
            value = getattr(value, inner, value)
    code = getattr(value, "__code__", None)
    if code is not None:
        return not code.co_filename.startswith(_LIBRARIES)
    return callable(value) and type(value).__module__.split(".")[0] not in (
        "builtins", "torch", "numpy")


_BASELINE: dict[str, tuple[int, ...]] = {}
_NAMES = " (its attribute names)"


def baseline() -> None:
    """Remembers the graders and library functions as they are before student code runs."""
    import course_utils.graders  # noqa: F401  (the graders are part of what is watched)
    _BASELINE.clear()
    _BASELINE.update({name: _identity(value) for name, value in _entries().items()})


def changed() -> list[str]:
    """The watched names replaced or removed since ``baseline()``, and the methods the
    notebook added to watched classes, sorted."""
    now = _entries()
    found = [name for name, identity in _BASELINE.items() if not name.endswith(_NAMES)
             and (name not in now or (_identity(now[name]) != identity
                                      and not _library_wrapper(now[name], identity[0])))]
    for name, identity in _BASELINE.items():
        cls = now.get(name[:-len(_NAMES)]) if name.endswith(_NAMES) else None
        if isinstance(cls, type) and _identity(now[name]) != identity:
            found += [f"{name[:-len(_NAMES)]}.{attribute}" for attribute, value
                      in list(vars(cls).items()) if f"{name[:-len(_NAMES)]}.{attribute}"
                      not in _BASELINE and _student_made(value)]
    return sorted(found)


class Answer(list):
    """Names, shown to the kernel's protocol as JSON: the reply to a user expression carries
    them under ``application/json``, which nbgrader's process reads without parsing text."""

    def _repr_json_(self) -> list[str]:
        return list(self)


def answer() -> Answer:
    """``changed()``, as nbgrader's process asks for it after each test cell."""
    return Answer(changed())


def main() -> None:
    """Starts the IPython kernel with the guard in place (``python -m
    course_utils.autograde.sandboxed.guard -f CONNECTION_FILE``, as ``ipykernel_launcher``)."""
    sys.addaudithook(_make_hook())
    from ipykernel import kernelapp
    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
