"""The default team: the calculator's exactness and safety, the clock's exactness on an injected clock, the
knowledge agent's retrieval, and the team's registration with and without the local runtime."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from fractions import Fraction

import pytest

from orchestra.agent import AgentContext, AgentReply
from orchestra.agents import calculator, clock, knowledge, team
from orchestra.agents.calculator import CalculationRefused, calculate
from orchestra.agents.clock import ClockAgent, add_months
from orchestra.cards import ModelCard
from orchestra.local import LOCAL_MODEL_ID
from orchestra.model import ChatOptions, ChatResult, Message
from orchestra.registry import Registry
from orchestra.testing import ScriptedModel

# -- calculator ---------------------------------------------------------------------------------------------


def _declined(reply: str | AgentReply) -> str:
    """The text of a tool's refusal, which must be marked declined so that no aggregator counts it as an answer."""
    assert isinstance(reply, AgentReply) and reply.declined, reply
    return reply.answer



@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("what is 17.5% of 2,480?", "434"),
        ("17.5 percent of 2480", "434"),
        ("What is (2 + 3) times 4?", "20"),
        ("0.1 + 0.2", "0.3"),
        ("1,000,000 - 1", "999999"),
        ("2 to the power of 64", "18446744073709551616"),
        ("2^10 + 3**2", "1033"),
        ("7 divided by 8", "0.875"),
        ("1/3", "1/3 ≈ 0.333333333333"),
        ("-(4 - 10) * 2.5", "15"),
        ("10 mod 4", "2"),
        ("50%", "0.5"),
        ("sqrt 144", "12"),
        ("square root of 2.25", "1.5"),
        ("2(3 + 4)", "14"),
        ("6 x 7", "42"),
        ("how much is 12 minus 20 plus 3?", "-5"),
    ],
)
def test_calculator_is_exact(query: str, expected: str) -> None:
    assert calculator.answer(query) == expected


def test_calculator_values_are_exact_fractions() -> None:
    assert calculate("0.1 + 0.2") == Fraction(3, 10)
    assert calculate("1/3 * 3") == 1
    assert calculate("17.5% of 2,480") == 434


@pytest.mark.parametrize(
    ("query", "rounded"),
    [
        ("10**30/3", "333333333333333333333333333333.333333333333"),
        ("2**100/3", "422550200076076467165567735125.333333333333"),
        ("10**100/3", "3" * 100 + "." + "3" * 12),
        ("1e3999/7", "857142857142.857142857143"),
    ],
)
def test_fractions_with_a_large_whole_part_are_rounded_not_a_crash(query: str, rounded: str) -> None:
    """format_number quantized at a precision of 40 digits, so a whole part past ~28 digits raised
    decimal.InvalidOperation out of the agent."""
    assert calculator.answer(query).endswith(rounded)


@pytest.mark.parametrize(
    ("query", "expected"), [(".5 + .5", "1"), (".5", "0.5"), ("what is .25 of 80", "20"), ("what is 5.", "5")]
)
def test_a_leading_decimal_point_is_kept(query: str, expected: str) -> None:
    """The sentence's punctuation was stripped from both ends, so ".5 + .5" was read as 5 + .5."""
    assert calculator.answer(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("80 - 15%", "68"),
        ("100 - 20%", "80"),
        ("25 plus 4 percent", "26"),
        ("what is 200 + 10%?", "220"),
        ("(80 - 15%) * 2", "136"),
        ("15% off 80", "68"),
        ("20% off $50", "40"),
        ("17.5% of 2,480", "434"),
        ("100 + 5% of 20", "101"),
        ("50% + 10", "10.5"),
        ("10 % 4", "2"),
    ],
)
def test_adding_or_taking_a_percentage_changes_the_running_value(query: str, expected: str) -> None:
    """"80 - 15%" gave 79.85 (80 - 0.15) where every calculator gives 68, and "15% off 80" was refused."""
    assert calculator.answer(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [("5!", "120"), ("0!", "1"), ("3 + 3!", "9"), ("(2**13000)**(1/2)", str(2**6500)), ("10**3999", str(10**3999))],
)
def test_factorials_and_exact_roots_of_large_numbers_are_computed(query: str, expected: str) -> None:
    """"5!" gave 5 (the ! was dropped), and (2**13000)**(1/2), exactly 2**6500, was called irrational."""
    assert calculator.answer(query) == expected


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("0x10 + 1", "only read decimal numbers"),
        ("1001!", "factorials up to 1000"),
        ("5.5!", "whole number"),
        ("10**4000", "more than 4000 digits"),
        ("1e4000", "more than 4000 digits"),
    ],
)
def test_what_the_calculator_would_misread_or_exceed_is_declined(query: str, reason: str) -> None:
    """0x10 + 1 gave 1 (the x read as times), and 10**4000, 4,001 digits, passed a 4000-digit limit."""
    assert reason in _declined(calculator.answer(query))


def test_only_a_root_of_exact_numbers_is_called_irrational() -> None:
    """sqrt(2)**2 is exactly 2, but its rounded result was said to be irrational."""
    assert calculator.answer("sqrt(2)**2") == "≈ 2 (rounded to 30 significant digits)"
    assert calculator.answer("2**(1/3)").endswith("the exact value is irrational)")


def test_irrational_results_are_marked_approximate() -> None:
    assert calculator.answer("square root of 2").startswith("≈ 1.41421356237309504880")


@pytest.mark.parametrize(
    "attack",
    [
        "__import__('os').system('echo pwned')",
        "().__class__.__bases__[0].__subclasses__()",
        "open('/etc/passwd').read()",
        "lambda: 1",
        "[1] * 10",
        "exec('1+1')",
        "1 if 1 else 2",
        "1; import os",
        "2 + os.getcwd()",
        "globals()",
        "x = 4",
        "'a' * 3",
    ],
)
def test_injection_attempts_are_refused(attack: str) -> None:
    with pytest.raises(CalculationRefused):
        calculate(attack)
    assert _declined(calculator.answer(attack)).startswith("Sorry, I can't calculate that.")


@pytest.mark.parametrize("huge", ["9**9**9", "10 ** 100000", "(10**3000) * (10**3000)", "2 ** 0.5 ** -9999"])
def test_huge_powers_are_refused_not_computed(huge: str) -> None:
    assert _declined(calculator.answer(huge)).startswith("Sorry")


def test_division_by_zero_and_non_arithmetic_are_refused_politely() -> None:
    assert "divides by zero" in _declined(calculator.answer("5 / (2 - 2)"))
    assert _declined(calculator.answer("what is the capital of France?")).startswith("Sorry, I can't calculate that.")
    assert "cannot interpret" in _declined(calculator.answer("what is 5 apples plus 3"))


# -- clock --------------------------------------------------------------------------------------------------------

FIXED = ClockAgent(now=lambda: datetime(2025, 3, 14, 9, 30, tzinfo=UTC))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("what is today's date?", "Today is Friday, 14 March 2025."),
        ("what day of the week is 2024-02-29?", "Thursday, 29 February 2024."),
        ("what day of the week was July 4, 1776?", "Thursday, 4 July 1776."),
        ("how many days between 2024-01-01 and 2024-12-25?", "359 days between"),
        ("what date is 90 days after March 3, 2025?", "Sunday, 1 June 2025"),
        ("what was the date 3 weeks ago?", "Friday, 21 February 2025"),
        ("Jan 31, 2024 plus 1 month", "Thursday, 29 February 2024"),
        ("what date is 2 years before 2024-02-29?", "Monday, 28 February 2022"),
        ("how many days until 25 December 2025?", "286 days"),
        ("what time is it in Asia/Tokyo?", "It is 18:30 on Friday, 14 March 2025 in Asia/Tokyo"),
        ("what time is it in New York?", "05:30"),
        ("what is next friday's date?", "Friday, 21 March 2025"),
    ],
)
def test_clock_is_exact(query: str, expected: str) -> None:
    assert FIXED(query).startswith(expected) or expected in FIXED(query)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("what time is it in Mumbai?", "It is 15:00 on Friday, 14 March 2025 in Asia/Kolkata"),
        ("what time is it in India?", "in Asia/Kolkata"),
        ("what time is it in San Francisco?", "It is 02:30 on Friday, 14 March 2025 in America/Los_Angeles"),
        ("what time is it in Beijing?", "17:30"),
        ("what time is it in São Paulo?", "06:30"),
        ("time in PST", "02:30"),
        ("what time is it at UTC+2?", "11:30"),
        ("what time is it in UTC-05:30", "04:00"),
        ("what time is it in the UK right now?", "in Europe/London"),
        ("what time is it?", "It is 09:30 on Friday, 14 March 2025 in UTC"),
        ("what is the date in 3 days?", "Monday, 17 March 2025"),
    ],
)
def test_clock_resolves_common_places_abbreviations_and_offsets(query: str, expected: str) -> None:
    """Each of these answered with the time in UTC: the clock only knew IANA names and their last component."""
    assert expected in FIXED(query)


@pytest.mark.parametrize(
    ("query", "place"),
    [("what time is it in Narnia?", "Narnia"), ("time in Europe/Pariss", "Europe/Pariss"),
     ("what time is it in the Shire right now?", "the Shire"), ("what is the time in UTC+25?", "UTC+25")],
)  # fmt: skip
def test_clock_declines_a_place_it_cannot_resolve_instead_of_answering_in_utc(query: str, place: str) -> None:
    reply = _declined(FIXED(query))
    assert f"I don't know the time zone of {place}" in reply and "09:30" not in reply


@pytest.mark.parametrize("count", ["9" * 5000, "9" * 8, "10000000"])
def test_a_huge_count_of_days_is_declined_not_a_crash(count: str) -> None:
    """Five thousand digits raised ValueError (Python's limit on converting long digit strings to int)."""
    assert "outside the calendar" in _declined(FIXED(f"{count} days from today"))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("what day is 31/12/2024?", "Tuesday, 31 December 2024."),
        ("what day is 12/31/2024?", "Tuesday, 31 December 2024."),
        ("what is the day after tomorrow?", "Sunday, 16 March 2025."),
        ("what was the day before yesterday?", "Wednesday, 12 March 2025."),
        ("what date is 2 years and 3 months from today?", "Monday, 14 June 2027 (2 years and 3 months after"),
        ("-5 days from today", "Sunday, 9 March 2025 (5 days before"),
        ("how many weeks until 2026-01-01?", "293 days between Friday, 14 March 2025 and Thursday, 1 January 2026 "
         "(41 weeks and 6 days)."),
        ("hours in a day", "24 hours in a day."),
        ("how many minutes are there in an hour?", "60 minutes in an hour."),
        ("what year is it?", "It is 2025."),
        ("what month is it?", "It is March 2025."),
        ("2024-02-29 to 2024-02-28", "1 day between Thursday, 29 February 2024 and Wednesday, 28 February 2024: "
         "the second is 1 day (0 weeks and 1 day) before the first."),
        ("how many days until 2025-01-01?", "Wednesday, 1 January 2025 has passed: it was 72 days"),
        ("how many days between 2024-03-01 and 2024-03-02?", "1 day between Friday, 1 March 2024 and Saturday, "
         "2 March 2024 (0 weeks and 1 day)."),
    ],
)  # fmt: skip
def test_clock_reads_what_it_misread(query: str, expected: str) -> None:
    """Each was answered confidently and wrongly: with today's date, tomorrow's, the first offset only, +5 for
    -5, the bare date for a count of weeks, "1 days", or a difference without its direction."""
    assert FIXED(query).startswith(expected)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("what day is 03/04/2024?", "could be 3 April or 4 March 2024"),
        ("1.5 days from today", "whole days"),
        ("what time is it in Tokyo in 3 hours?", "only tell the current time"),
        ("convert 3pm Tokyo to London time", "only tell the current time"),
        ("what time is 9am EST in London?", "only tell the current time"),
    ],
)
def test_clock_declines_what_it_cannot_read_exactly(query: str, reason: str) -> None:
    """These were answered with today's date, 5 days for 1.5, or the current time."""
    assert reason in _declined(FIXED(query))


def test_add_months_clamps_to_month_end() -> None:
    from datetime import date

    assert add_months(date(2023, 1, 31), 1) == date(2023, 2, 28)
    assert add_months(date(2023, 12, 15), 2) == date(2024, 2, 15)
    assert add_months(date(2024, 3, 31), -1) == date(2024, 2, 29)


def test_clock_refuses_other_questions_and_invalid_dates() -> None:
    assert _declined(FIXED("what is the weather in Paris?")).startswith("Sorry, I only answer date and time questions")
    assert "not a valid date" in _declined(FIXED("what day is 2023-02-29?"))


def test_clock_default_uses_the_real_clock() -> None:
    today = datetime.now(UTC).date()
    assert str(today.year) in clock.answer("what is today's date?")


# -- knowledge ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kb() -> knowledge.KnowledgeBase:
    return knowledge.default_knowledge_base()


@pytest.mark.parametrize(
    ("query", "source"),
    [
        ("how do I replay a run?", "replay.md"),
        ("what does the trace store keep?", "store.md"),
        ("what happens when the local server crashes?", "local-model.md"),
        ("which routers are there?", "routers.md"),
        ("which command prints the decision tree of a run?", "cli.md"),
    ],
)
def test_knowledge_retrieval_finds_the_right_doc(kb: knowledge.KnowledgeBase, query: str, source: str) -> None:
    hits = kb.search(query)
    assert hits and hits[0].passage.source.startswith(source)


def test_knowledge_answers_with_sources_and_admits_ignorance(kb: knowledge.KnowledgeBase) -> None:
    reply = kb.answer("how do I replay a run exactly?")
    assert "zero model calls" in reply.answer and "(source: replay.md" in reply.answer
    assert reply.meta["known"] is True
    unknown = kb.answer("what is the capital of France?")
    assert unknown.answer.startswith("I don't know") and unknown.meta["known"] is False


class _Models:
    """A ModelAccess over scripted models (what the runtime hands agents)."""

    def __init__(self, model: ScriptedModel) -> None:
        self.model = model

    def chat(
        self, model_id: str, messages: list[Message], options: ChatOptions | None = None, *, purpose: str = ""
    ) -> ChatResult:
        return self.model.chat(messages, options)

    async def achat(
        self, model_id: str, messages: list[Message], options: ChatOptions | None = None, *, purpose: str = ""
    ) -> ChatResult:
        return await self.model.achat(messages, options)


def test_knowledge_summarises_through_the_card_model(kb: knowledge.KnowledgeBase) -> None:
    model = ScriptedModel("summariser", ["Use orchestra replay RUN_ID."])
    card = knowledge.KNOWLEDGE_CARD.with_changes(model="summariser")
    reply = kb.answer("how do I replay a run?", AgentContext(card=card, models=_Models(model)))
    assert reply.answer.startswith("Use orchestra replay RUN_ID.") and "sources: replay.md" in reply.answer
    assert reply.model_id == "summariser"
    system = model.calls[0][0][0].content
    assert "zero model calls" in system  # the retrieved passages were given to the model


# -- the team -------------------------------------------------------------------------------------------------


def test_tool_agents_only_without_local_model() -> None:
    registry = Registry()
    cards = team.install_default_team(registry, local_model=False)
    assert [card.id for card in cards] == ["calculator", "clock", "knowledge"]
    assert registry.models() == []
    assert all(card.description and card.examples for card in cards)
    assert registry.implementation("calculator") is calculator.answer
    team.install_default_team(registry, local_model=False)  # idempotent
    assert len(registry.agents()) == 3


def test_missing_local_runtime_leaves_tool_agents_and_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    registry = Registry()
    notes = team.default_profile(registry)
    assert {card.id for card in registry.agents()} == {"calculator", "clock", "knowledge"}
    assert notes and "pip install 'orchestra-routing[local]'" in notes[0]
    assert team.refining_model_id(registry) is None
    # the profile's caller shows the note; logged as well, the CLI printed it twice
    assert not [record for record in caplog.records if "pip install" in record.getMessage()]
    team.install_default_team(Registry(), local_model=True)  # no caller to show it: logged
    assert [record for record in caplog.records if "pip install" in record.getMessage()]


def test_full_team_registers_the_local_model_and_chat_agent() -> None:
    from orchestra.local import local_runtime_available

    if not local_runtime_available():
        pytest.skip("local runtime not installed")
    registry = Registry()
    cards = team.install_default_team(registry)
    assert [card.id for card in cards] == ["calculator", "clock", "knowledge", "chat"]
    model: ModelCard = registry.model(LOCAL_MODEL_ID)
    assert model.local and model.cost_usd(10, 10) == 0.0
    assert registry.agent("chat").model == LOCAL_MODEL_ID
    assert team.refining_model_id(registry) == LOCAL_MODEL_ID


def test_default_team_answers_through_a_routed_run() -> None:
    from orchestra.aggregate import PassThrough
    from orchestra.runtime import Orchestra

    app = Orchestra(store="memory://")
    team.install_default_team(app.registry, local_model=False)
    workflow = app.workflow("embedding", aggregator=PassThrough())
    arithmetic = workflow.run("what is 17.5% of 2,480?")
    assert arithmetic.status == "ok" and "434" in (arithmetic.answer or "")
    assert "calculator" in [obs.agent_id for obs in arithmetic.observations if obs.ok]
    date_query = workflow.run("what day of the week is 2024-02-29?")
    assert "Thursday, 29 February 2024" in (date_query.answer or "")
    assert "clock" in [obs.agent_id for obs in date_query.observations if obs.ok]


@pytest.mark.parametrize(
    ("query", "expected"),
    [("and 10% of that?", "43.4"), ("multiply that by 3", "1302"), ("now divide it by 2", "217"),
     ("subtract 34 from it", "400"), ("add 6 to the result", "440"), ("what is that plus 5?", "439")],
)
def test_a_follow_up_calculates_on_the_previous_answer(query: str, expected: str) -> None:
    """In a session, "and 10% of that?" after 434 was refused ("I cannot interpret 'and', 'that'")."""
    from orchestra.routing import Turn

    history = (Turn(role="user", content="what is 17.5% of 2,480?"), Turn(role="assistant", content="434"))
    assert calculator.answer(query, AgentContext(card=calculator.CALCULATOR_CARD, models=None, history=history)) == expected  # type: ignore[arg-type]


def test_that_is_the_previous_answer_only_when_it_was_one_number() -> None:
    from orchestra.aggregate import PassThrough
    from orchestra.routing import Turn
    from orchestra.runtime import Orchestra

    sentence = (Turn(role="assistant", content="It is 3 pm and 5 degrees"),)
    reply = calculator.answer("and 10% of that?", AgentContext(card=calculator.CALCULATOR_CARD, models=None, history=sentence))  # type: ignore[arg-type]
    assert isinstance(reply, AgentReply) and reply.declined
    assert calculator.answer("multiply 6 by 7") == "42" and calculator.answer("divide 10 by 4") == "2.5"
    # through a session: the runtime gives the function agent its context, with the session's history
    app = Orchestra(store="memory://")
    app.registry.add_agent(calculator.CALCULATOR_CARD, implementation=calculator.answer)
    workflow = app.workflow("all", aggregator=PassThrough())
    first = workflow.run("what is 17.5% of 2,480?")
    assert workflow.run("and 10% of that?", session_id=first.session_id).answer == "43.4"


@pytest.mark.parametrize(
    ("query", "agent"),
    [("thanks!", "chat"), ("what can you do?", "chat"), ("write a long story about a dragon and a knight", "chat"),
     ("how do I set a budget", "knowledge"), ("what is 17.5% of 2,480?", "calculator"), ("what time is it in Tokyo?", "clock")],
)
def test_the_default_team_routes_everyday_requests_to_an_agent(query: str, agent: str) -> None:
    """Thanks, "what can you do?" and a story request were out of scope (the chat agent's card scored 0.15-0.29),
    and a budget question never reached the documentation agent."""
    from orchestra.routing import RouterState, load_router

    cards = [card for card, _ in team.tool_cards()] + [team.CHAT_CARD]
    decision = load_router("embedding").decide(RouterState(query=query, agents=tuple(cards), models=(), registry_version=0))
    assert [call.agent_id for call in getattr(decision, "calls", ())][:1] == [agent]


@pytest.mark.parametrize(
    "nested", ["(" * 240 + "1" + ")" * 240, "-" * 300 + "1", "2 ** 0.5 ** -99999", "1e999999 * 1e999999"]
)
def test_pathological_inputs_are_refused_without_crashing(nested: str) -> None:
    assert _declined(calculator.answer(nested)).startswith("Sorry")


def test_installing_the_team_again_keeps_a_users_update_and_removal() -> None:
    """`orchestra chat` and `replay` install the profile on every start: that must not bring back an agent a user
    removed, nor put back the description a user changed, while it still attaches the in-process answers."""
    from orchestra.store import InMemoryStore

    store = InMemoryStore()
    team.install_default_team(Registry(store), local_model=False)
    user = Registry(store)
    user.remove_agent("clock")
    user.update_agent(user.agent("calculator").with_changes(description="Does the office's sums."))
    later = Registry(store)  # the next process
    cards = team.install_default_team(later, local_model=False)
    assert [card.id for card in cards] == ["calculator", "knowledge"]
    assert later.agent("calculator").description == "Does the office's sums."
    assert later.implementation("calculator") is calculator.answer
    assert Registry(store).version == later.version  # nothing was written
