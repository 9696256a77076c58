"""Campaign templates: Liquid with limits, defined once for the scheduler (checking a template when a
campaign is saved) and the dispatcher (rendering it for each user).

A template is written by whoever holds an API key, and rendered with data anyone can send through an
SDK; rendering is synchronous CPU work on the dispatcher's event loop, where one slow render holds
up every other send. So every way a render can spend time or memory is bounded, per message (all
the templates of one message together):

- loops: `MAX_LOOP_ITERATIONS` iterations in all (python-liquid's own `loop_iteration_limit` refuses
  one nest of loops whose product is larger before it starts; the total is counted here, because
  many loops one after another would each pass it);
- output: `MAX_OUTPUT_BYTES` of rendered text (`output_stream_limit`, captures included);
- values: a filter's result holds at most `MAX_VALUE_CHARS` characters and `MAX_ITEMS` items, and a
  range handed to a filter at most `MAX_ITEMS` numbers (`(1..100000000) | sum` iterates it);
  `replace` and `join` are checked before they run, since their result grows with the product of
  their arguments;
- assigned variables: `MAX_LOCALS_BYTES` (`local_namespace_limit`), so doubling a string or a
  list in a loop stops early;
- nesting: `MAX_CONTEXT_DEPTH` scopes (`context_depth_limit`), `MAX_BLOCK_NESTING` blocks;
- time: `RENDER_BUDGET_SECONDS` of CPU time, checked at every loop iteration and filter call. CPU
  time of this thread, not wall-clock time: a busy machine must never turn a good template into a
  skipped send, and the CPU a render takes is exactly what it takes from the other sends. Less the
  time the garbage collector spends in this thread meanwhile: a full collection of a busy
  dispatcher's heap can take longer than the whole budget, and it collects what every send made,
  not this template's work (CI once skipped a send of `{{ send_id }}` that way).

A render that passes a limit raises TemplateError; the dispatcher skips that send (`template_error`).
When a campaign is saved, `problems()` refuses what is knowable without data: a template that does
not parse, is too long, uses an unknown filter, a partial (`include`, `render`: there are none), a
variable outside `TEMPLATE_ROOTS`, or a range or loop of literal bounds beyond the limits.
"""

import gc
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from liquid import BoundTemplate, Environment, RenderContext
from liquid.ast import Node
from liquid.builtin.expressions import LoopExpression
from liquid.builtin.expressions.primitive import Literal, RangeLiteral
from liquid.exceptions import LiquidError, LoopIterationLimitError, ResourceLimitError
from liquid.expression import Expression
from liquid.output import LimitedStringIO
from liquid.static_analysis import Variable
from liquid.stringify import to_liquid_string

MAX_TEMPLATE_CHARS = 32_768  # one template's source (parsing the densest takes ~0.2 s, once per process)
MAX_LOOP_ITERATIONS = 10_000  # per message, all loops together
MAX_ITEMS = MAX_LOOP_ITERATIONS  # in a list or range a filter takes or makes
MAX_OUTPUT_BYTES = 256 * 1024  # rendered text per message (UTF-8)
MAX_VALUE_CHARS = MAX_OUTPUT_BYTES  # in a filter's result
MAX_LOCALS_BYTES = 128 * 1024  # `assign` and `capture` variables, by sys.getsizeof
MAX_NUMBER_BITS = 1024  # a filter's integer result (repeated `times` would grow it without end)
MAX_CONTEXT_DEPTH = 16  # scopes: the render's own 5, plus one per enclosing loop
MAX_BLOCK_NESTING = 16  # blocks (if, for, case, ...) inside one another
RENDER_BUDGET_SECONDS = 0.1  # CPU seconds per message: twice a 10,000-iteration loop; a long real message takes a few ms
# What a template can read; the dispatcher's render context has exactly these roots, and these fields in each.
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "user": ("user_id", "traits", "attributes", "devices", "computed"),
    "event": ("name", "properties", "timestamp"),
    "campaign": ("id",),
    "send_id": (),  # text
}
TEMPLATE_ROOTS = tuple(TEMPLATE_FIELDS)
LIQUID_PROPERTIES = ("size", "first", "last")  # what Liquid reads on any list, text or object
PARTIAL_TAGS = ("include", "render")
CHECK_EVERY = 64  # loop iterations between two looks at the clock (a look costs about a microsecond)


class _CollectorClock(threading.local):
    """CPU time the garbage collector has spent in this thread, kept by a `gc.callbacks` hook."""

    spent: float = 0.0
    started: float | None = None


_collector = _CollectorClock()


def _on_collection(phase: str, _info: Mapping[str, int]) -> None:
    if phase == "start":
        _collector.started = time.thread_time()
    elif _collector.started is not None:
        _collector.spent += time.thread_time() - _collector.started
        _collector.started = None


gc.callbacks.append(_on_collection)


def render_clock() -> float:
    """This thread's CPU time, less what the garbage collector took of it: what renders are charged."""
    return time.thread_time() - _collector.spent


class TemplateError(Exception):
    """A template cannot be rendered (or saved) as it is; the message says why, without the data."""


class BudgetExceeded(ResourceLimitError):
    """A render took more CPU time than its budget, or passed one of the value limits."""


@dataclass
class Budget:
    """What the renders of one message may spend together: CPU time, loop iterations, output."""

    seconds: float = RENDER_BUDGET_SECONDS
    iterations: int = MAX_LOOP_ITERATIONS
    output_bytes: int = MAX_OUTPUT_BYTES
    deadline: float = field(init=False, default=0.0)
    allowed: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.allowed = self.seconds
        self.deadline = render_clock() + self.seconds  # until `running` starts the clock again

    @contextmanager
    def running(self) -> Iterator[None]:
        """Spend CPU time from the budget while the block runs (a render; parsing is not counted)."""
        started = render_clock()
        self.deadline = started + self.seconds
        try:
            yield
        finally:
            self.seconds -= render_clock() - started

    def check_time(self) -> None:
        """Raise once this thread has spent the budget's CPU time (garbage collection not counted)."""
        if render_clock() > self.deadline:
            raise BudgetExceeded(f"the render took more than its budget of {self.allowed:g}s of CPU time", token=None)

    def spend_iterations(self, count: int) -> None:
        """Count a loop's iterations before it runs; raise when the total passes the limit."""
        self.iterations -= count
        if self.iterations < 0:
            raise LoopIterationLimitError(
                f"loop iteration limit reached (at most {MAX_LOOP_ITERATIONS} iterations per message)", token=None
            )


class LimitedContext(RenderContext):
    """A render context that counts every loop's iterations, watches the clock and checks filter values."""

    __slots__ = ("budget",)

    def __init__(self, template: BoundTemplate, *, budget: Budget | None = None, **kwargs: Any) -> None:
        super().__init__(template, **kwargs)
        self.budget = budget or Budget()

    @contextmanager
    def loop(self, namespace: Mapping[str, object], forloop: Any) -> Iterator[RenderContext]:
        """Count the loop's iterations up front and look at the clock while it runs."""
        self.budget.check_time()
        self.budget.spend_iterations(forloop.length)
        # ForLoop and TableRow (python-liquid 2.3) iterate `it`: wrapping it checks every iteration.
        forloop.it = _timed(forloop.it, self.budget)
        with super().loop(namespace, forloop) as context:
            yield context

    def filter(self, name: str, token: Any) -> Callable[..., object]:
        """The filter, checked: its inputs and result within the value limits, the clock at every call."""
        func = super().filter(name, token)
        budget = self.budget

        def checked(left: object, *args: object, **kwargs: object) -> object:
            budget.check_time()
            for value in (left, *args, *kwargs.values()):
                if isinstance(value, range) and _range_length(value) > MAX_ITEMS:
                    raise BudgetExceeded(f"{name}: a range of more than {MAX_ITEMS} numbers", token=None)
            _before(name, left, args, kwargs)
            result = func(left, *args, **kwargs)
            _after(name, result)
            return result

        return checked

    def copy(self, *args: Any, **kwargs: Any) -> RenderContext:
        """A copy (for a partial) spends from the same budget."""
        copied = super().copy(*args, **kwargs)
        if isinstance(copied, LimitedContext):
            copied.budget = self.budget
        return copied


class LimitedTemplate(BoundTemplate):
    """A parsed template whose renders are always limited, even through BoundTemplate.render."""

    context_class = LimitedContext


class LimitedEnvironment(Environment):
    """Liquid with Herald's limits; strict about unknown filters, lax about missing variables."""

    loop_iteration_limit = MAX_LOOP_ITERATIONS
    output_stream_limit = MAX_OUTPUT_BYTES
    local_namespace_limit = MAX_LOCALS_BYTES
    context_depth_limit = MAX_CONTEXT_DEPTH
    block_nesting_limit = MAX_BLOCK_NESTING
    template_class = LimitedTemplate


@lru_cache(maxsize=2)
def environment(autoescape: bool = False) -> LimitedEnvironment:
    """The one environment both services parse and render with; `autoescape` for HTML (an email's HTML body),
    where a user's `<` or `&` must arrive as text, never as markup."""
    return LimitedEnvironment(autoescape=autoescape)


@lru_cache(maxsize=512)  # a dense 32 KB template parses to ~3 MB
def parse(source: str, autoescape: bool = False) -> BoundTemplate:
    """A parsed template (cached by source); TemplateError when it does not parse."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"longer than {MAX_TEMPLATE_CHARS} characters")
    try:
        return environment(autoescape).from_string(source)
    except LiquidError as exc:
        raise TemplateError(describe(exc)) from exc


def render(source: str, data: Mapping[str, object], budget: Budget, autoescape: bool = False) -> str:
    """Render one template within what is left of the message's budget; TemplateError when it cannot be.
    With `autoescape`, every value output is HTML-escaped unless a filter marks it safe."""
    template = parse(source, autoescape)
    context = LimitedContext(template, globals=template.make_globals(dict(data)), budget=budget)
    buffer = LimitedStringIO(limit=budget.output_bytes)
    try:
        with budget.running():
            budget.check_time()  # an earlier template of this message may have spent it all
            template.render_with_context(context, buffer)
    except LiquidError as exc:
        raise TemplateError(describe(exc)) from exc
    except Exception as exc:
        # python-liquid's own code meeting this user's data (an integer too long to print, a date
        # out of range, ...): this template's failure for this send, never the dispatcher's.
        raise TemplateError(f"the template failed on this data ({type(exc).__name__})") from exc
    budget.output_bytes -= buffer.size
    return buffer.getvalue()


def describe(exc: LiquidError) -> str:
    """A Liquid error in one short line with its position, never the template's text or the user's data."""
    where = exc.context()
    message = str(exc.message).splitlines()[0][:200] if exc.message else type(exc).__name__
    return f"{message} (line {where[0]}, column {where[1]})" if where else message


def problems(source: str) -> list[str]:
    """What is wrong with a template before any data meets it (empty when nothing is)."""
    try:
        template = parse(source)
    except TemplateError as exc:
        return [f"not a valid Liquid template: {exc}"]
    analysis = template.analyze(include_partials=False)
    found = [f"unknown filter `{name}`" for name in analysis.filters if name not in environment().filters]
    found += [f"`{{% {tag} %}}` is not available (there are no partial templates)" for tag in analysis.tags if tag in PARTIAL_TAGS]
    found += _unknown_variables(analysis.globals, source)
    static = RenderContext(template)
    for node in template.nodes:
        found += _static_limits(node, static, 1)
    return found


@lru_cache(maxsize=4096)
def user_parts(sources: tuple[str, ...]) -> frozenset[str]:
    """The fields of `user` these templates read (`traits`, `attributes`, `devices`, `computed`), all of them
    when one reads `user` whole or by a computed key; analysed once per distinct set of templates.

    The dispatcher asks the profiles service for these parts only: devices and computed values cost reads
    that traits do not. Text that is not a valid template reads nothing (the render will say why)."""
    found: set[str] = set()
    for source in sources:
        if "user" not in source:
            continue
        try:
            analysis = parse(source).analyze(include_partials=False)
        except TemplateError:
            continue
        for use in analysis.globals.get("user", []):
            field = use.segments[1] if len(use.segments) > 1 else None
            if not isinstance(field, str) or field in LIQUID_PROPERTIES:
                return frozenset(TEMPLATE_FIELDS["user"])
            found.add(field)
    return frozenset(found)


def _unknown_variables(globals_: Mapping[str, list[Variable]], source: str) -> list[str]:
    """A variable whose root is none of TEMPLATE_ROOTS (`usr.traits`), or whose field is none of its root's
    (`user.trait`), once per name, where it first appears: it would render as nothing for every user."""
    found: list[str] = []
    for name, uses in globals_.items():
        if name not in TEMPLATE_FIELDS:
            found.append(f"unknown variable `{name}`{_at(uses[0], source)} (a template reads {', '.join(TEMPLATE_ROOTS)})")
            continue
        fields = TEMPLATE_FIELDS[name]
        wrong: dict[str, Variable] = {}
        for use in uses:
            field = use.segments[1] if len(use.segments) > 1 else None
            if isinstance(field, str) and field not in fields and field not in LIQUID_PROPERTIES:
                wrong.setdefault(field, use)
        found += [
            f"unknown variable `{name}.{field}`{_at(use, source)} "
            + (f"(`{name}` has {', '.join(fields)})" if fields else f"(`{name}` is text)")
            for field, use in wrong.items()
        ]
    return found


def _at(variable: Variable, source: str) -> str:
    """Where a variable is in its template, as Liquid's own errors say it."""
    try:
        line, column = variable.span.line_col(source)
    except ValueError:
        return ""
    return f" (line {line}, column {column})"


def _static_limits(node: Node, static: RenderContext, enclosing: int) -> list[str]:
    """Loops and ranges whose literal bounds already pass the limits; `enclosing` is the literal loops around."""
    found: list[str] = []
    inner = enclosing
    for expression in node.expressions():
        if isinstance(expression, LoopExpression):
            length = _literal_loop_length(expression)
            if length is not None:
                inner = enclosing * length
                if inner > MAX_LOOP_ITERATIONS:
                    found.append(
                        f"the loop `{expression}` runs {inner} times (at most {MAX_LOOP_ITERATIONS} iterations per message)"
                    )
            ranges = [e for e in expression.children() if e is not expression.iterable]
            if not isinstance(expression.iterable, RangeLiteral):
                ranges.append(expression.iterable)
        else:
            ranges = [expression]
        found += [problem for e in ranges for problem in _long_ranges(e)]
    for child in node.children(static, include_partials=False):
        found += _static_limits(child, static, inner)
    return found


def _long_ranges(expression: Expression) -> Iterable[str]:
    """Range literals of literal bounds longer than MAX_ITEMS, anywhere in an expression."""
    if isinstance(expression, RangeLiteral):
        length = _literal_range_length(expression)
        if length is not None and length > MAX_ITEMS:
            yield f"the range `{expression}` spans {length} numbers (at most {MAX_ITEMS})"
    for child in expression.children():
        yield from _long_ranges(child)


def _literal_loop_length(loop: LoopExpression) -> int | None:
    """How many times a loop over a literal range runs (its literal `limit` applied), or None if data decides."""
    if not isinstance(loop.iterable, RangeLiteral):
        return None
    length = _literal_range_length(loop.iterable)
    if length is None:
        return None
    if isinstance(loop.limit, Literal):
        limit = _literal_int(loop.limit)
        if limit is None:
            return None
        length = min(length, max(limit, 0))
    return length


def _literal_range_length(expression: RangeLiteral) -> int | None:
    start, stop = _literal_int(expression.start), _literal_int(expression.stop)
    if start is None or stop is None:
        return None
    return max(0, stop - start + 1)


def _literal_int(expression: Expression) -> int | None:
    if not isinstance(expression, Literal):
        return None
    try:
        return int(expression.value)
    except (TypeError, ValueError, OverflowError):
        return None


def _timed(iterator: Iterator[Any], budget: Budget) -> Iterator[Any]:
    """The loop's own iterator, looking at the clock every CHECK_EVERY iterations."""
    for count, item in enumerate(iterator):
        if count % CHECK_EVERY == 0:
            budget.check_time()
        yield item


def _range_length(value: range) -> int:
    try:
        return len(value)
    except OverflowError:  # longer than sys.maxsize
        return sys.maxsize


def _before(name: str, left: object, args: tuple[object, ...], kwargs: Mapping[str, object]) -> None:
    """Refuse a `replace` or `join` whose result would pass the value limit, before building it."""
    if name == "replace" and args:
        text = to_liquid_string(left, autoescape=False)
        old = to_liquid_string(args[0], autoescape=False)
        new = to_liquid_string(args[1] if len(args) > 1 else kwargs.get("sub", ""), autoescape=False)
        occurrences = text.count(old) if old else len(text) + 1
        size = len(text) + occurrences * (len(new) - len(old))
    elif name == "join" and isinstance(left, (list, tuple, range)):  # a string or an object is joined as one item
        separator = to_liquid_string(args[0] if args else kwargs.get("separator", " "), autoescape=False)
        count = len(left)  # a range is at most MAX_ITEMS long here
        items = count * len(str(left.stop)) if isinstance(left, range) else _weight(left)[0]
        size = count * len(separator) + items
    else:
        return
    if size > MAX_VALUE_CHARS:
        raise BudgetExceeded(f"{name}: the result would hold {size} characters (at most {MAX_VALUE_CHARS})", token=None)


def _after(name: str, result: object) -> None:
    """Refuse a filter's result beyond the value limits."""
    if isinstance(result, int) and not isinstance(result, bool):
        if result.bit_length() > MAX_NUMBER_BITS:
            raise BudgetExceeded(f"{name}: a number too large (more than {MAX_NUMBER_BITS} bits)", token=None)
        return
    if isinstance(result, range):
        if _range_length(result) > MAX_ITEMS:
            raise BudgetExceeded(f"{name}: a range of more than {MAX_ITEMS} numbers", token=None)
        return
    chars, items = _weight(result)
    if chars > MAX_VALUE_CHARS:
        raise BudgetExceeded(f"{name}: a result of more than {MAX_VALUE_CHARS} characters", token=None)
    if items > MAX_ITEMS:
        raise BudgetExceeded(f"{name}: a result of more than {MAX_ITEMS} items", token=None)


def _weight(value: object) -> tuple[int, int]:
    """(characters in strings, items in lists and mappings) of a value, nested, counted until a limit is passed."""
    chars = items = 0
    pending = [value]
    while pending and chars <= MAX_VALUE_CHARS and items <= MAX_ITEMS:
        current = pending.pop()
        if isinstance(current, str):
            chars += len(current)
        elif isinstance(current, Mapping):
            items += len(current)
            pending.extend(current.keys())
            pending.extend(current.values())
        elif isinstance(current, (list, tuple)):
            items += len(current)
            pending.extend(current)
        elif isinstance(current, range):
            items += _range_length(current)
    return chars, items
