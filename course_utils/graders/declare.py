"""Declaring an exercise: its checks and their weights, the lesson they carry, its misconceptions.

An exercise's grader module declares everything up front, in one ``Exercise``; the grader
function then judges each declared check by name (see ``judge.Judge``). Modules in
``course_utils.graders.exercises`` are found and imported automatically.

Example:
    >>> demo = Exercise(
    ...     "double",
    ...     checks=[Check("value", "returns twice its input", weight=2, lesson=True),
    ...             Check("type", "returns an int")],
    ...     misconceptions=[Misconception("squares", "squares instead of doubling",
    ...                                   "You returned {got}, the square of {x}.",
    ...                                   produces=lambda x: x * x)])
    >>> [c.name for c in demo.checks], demo.weight("value"), demo.plain_names["squares"]
    (['value', 'type'], 2, 'squares instead of doubling')
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

# Codes any exercise may report, with the plain name a person reads beside each.
GENERIC_CODES: dict[str, str] = {
    "not_implemented": "exercise not attempted yet",
    "raised_exception": "the code raised an exception",
    "timeout": "the code ran too long (an endless loop?)",
    "wrong_return_type": "returns the wrong type",
    "wrong_value": "returns a wrong value",
    "tampered": "the graders, or library functions they rely on, were changed",
}


@dataclass(frozen=True)
class Check:
    """One property of a submission, judged on its own so that a failure points at its cause.

    Args:
        name: how the grader refers to it (``judge.check("value", ...)``).
        says: what passing means, in words ("returns the mean squared error").
        weight: its share of the score, relative to the exercise's other checks.
        lesson: it carries the exercise's lesson; failing it caps the score
            (``scoring.LESSON_CAP``).
        data: judged only when grading on this data (``"mnist"``); None: always.
    """

    name: str
    says: str
    weight: float = 1.0
    lesson: bool = False
    data: str | None = None


def lesson(checks: Sequence[Check], *names: str) -> list[Check]:
    """Shared check declarations, with the ones named marked as carrying this exercise's lesson.

    Example:
        >>> [c.lesson for c in lesson([Check("a", "..."), Check("b", "...")], "b")]
        [False, True]
    """
    unknown = set(names) - {c.name for c in checks}
    if unknown:
        raise KeyError(f"no such checks: {sorted(unknown)}")
    return [replace(c, lesson=True) if c.name in names else c for c in checks]


@dataclass(frozen=True)
class Misconception:
    """A known mistake: its code, plain name, how it shows in the evidence, and what to say.

    Args:
        code: the diagnosis code reports carry (``"wrong_reduction"``).
        plain: the plain name beside the code ("loss uses sum instead of the mean").
        message: the feedback, a template filled with the evidence's numbers
            (``"{what} is {got}, ..."``).
        produces: what code with this mistake gives for the evidence (a loss value, a
            gradient, an average); the mistake is recognised when the student's result
            equals it. None for mistakes recognised otherwise (a mode, a missing call).

    Example:
        >>> halved = Misconception("no_factor_two", "the factor 2 is missing",
        ...                        "{got} is half of {want}.", produces=lambda want: want / 2)
        >>> halved.explains(3.0, 6.0, same=lambda a, b: abs(a - b) < 1e-9)
        True
        >>> halved.say(got=3, want=6)
        '3 is half of 6.'
    """

    code: str
    plain: str
    message: str = ""
    produces: Callable[..., Any] | None = None

    def explains(self, got: Any, evidence: Any, same: Callable[[Any, Any], bool]) -> bool:
        """True when the student's result ``got`` is what this mistake gives for ``evidence``."""
        return self.produces is not None and bool(same(got, self.produces(evidence)))

    def say(self, **numbers: Any) -> str:
        """The message with the evidence's numbers filled in."""
        return self.message.format(**numbers)

    def saying(self, message: str, produces: Callable[..., Any] | None = None) -> Misconception:
        """The same mistake (code and plain name) where other evidence shows it.

        Example:
            >>> halved = Misconception("no_factor_two", "the factor 2 is missing")
            >>> halved.saying("Half of {want}.").plain
            'the factor 2 is missing'
        """
        return replace(self, message=message, produces=produces)


def generic(code: str, message: str, produces: Callable[..., Any] | None = None,
            ) -> Misconception:
    """A misconception reported under a generic code (``wrong_value``, ...), with its plain name.

    Example:
        >>> generic("wrong_value", "{got} is the loss after the update.").plain
        'returns a wrong value'
    """
    return Misconception(code, GENERIC_CODES[code], message, produces)


def recognise(got: Any, evidence: Any, mistakes: Iterable[Misconception],
              same: Callable[[Any, Any], bool]) -> Misconception | None:
    """The first of ``mistakes`` that explains ``got``, or None.

    Example:
        >>> summed = Misconception("wrong_reduction", "sum, not mean", produces=sum)
        >>> recognise(6, [1, 2, 3], [summed], same=lambda a, b: a == b).code
        'wrong_reduction'
    """
    return next((m for m in mistakes if m.explains(got, evidence, same)), None)


Grader = Callable[..., None]
_REGISTRY: dict[str, "Exercise"] = {}


@dataclass
class Exercise:
    """Everything about grading one exercise, declared in one place.

    Args:
        name: the exercise's name in the course (``"mse_loss"``).
        checks: the checks, in the order the grader judges them. An exception in the
            student's code fails the first check not judged yet; the ones after it cannot
            run and count as failed.
        misconceptions: the mistakes this exercise recognises; their codes and plain
            names join the generic ones (``GENERIC_CODES``).
        timeout: seconds each call into the student's code may take by default.

    Used as a decorator, it registers the grader function
    ``grader(judge, student, *, data) -> None``.
    """

    name: str
    checks: Sequence[Check]
    misconceptions: Sequence[Misconception] = ()
    timeout: float = 10.0
    grader: Grader | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.checks]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: check names repeat: {names}")
        codes: dict[str, str] = {}
        for m in self.misconceptions:
            if {codes.get(m.code, m.plain), GENERIC_CODES.get(m.code, m.plain)} != {m.plain}:
                raise ValueError(f"{self.name}: code {m.code!r} has two plain names")
            codes[m.code] = m.plain
        self.plain_names: dict[str, str] = {**GENERIC_CODES, **codes}

    def __call__(self, grader: Grader) -> Grader:
        self.grader = grader
        if self.name in _REGISTRY and _REGISTRY[self.name].grader is not grader:
            raise ValueError(f"exercise {self.name!r} is declared twice")
        _REGISTRY[self.name] = self
        return grader

    def checks_for(self, data: str) -> list[Check]:
        """The checks judged when grading on ``data``."""
        return [c for c in self.checks if c.data in (None, data)]

    def check(self, name: str) -> Check:
        """The declared check called ``name``; a grader asking for another one is a bug."""
        found = next((c for c in self.checks if c.name == name), None)
        if found is None:
            raise KeyError(f"{self.name} declares no check {name!r}; it declares "
                           f"{', '.join(c.name for c in self.checks)}")
        return found

    def weight(self, name: str) -> float:
        """The weight of the declared check called ``name``."""
        return self.check(name).weight

    def mistakes(self, *codes: str) -> list[Misconception]:
        """The declared misconceptions with these codes, in declaration order."""
        return [m for m in self.misconceptions if m.code in codes]


def registry() -> dict[str, Exercise]:
    """Every declared exercise by name (the modules declaring them must be imported)."""
    return dict(_REGISTRY)


def plain_names() -> dict[str, str]:
    """Every code any declared exercise may report, with its plain name."""
    names = dict(GENERIC_CODES)
    for exercise in _REGISTRY.values():
        names.update(exercise.plain_names)
    return names
