"""The date/time agent: today's date, the weekday of a date, days between dates, a date plus or minus some days,
weeks, months or years, and the time in a named time zone (IANA names through `zoneinfo`, a city or country, an
abbreviation such as PST, or an offset such as UTC+2). A place it cannot resolve is declined, never answered in
the default zone.

The clock is injectable, so answers are exact and testable::

    agent = ClockAgent(now=lambda: datetime(2025, 3, 14, 9, 30, tzinfo=UTC))
    agent("what day of the week is 2024-02-29?")   # 'Thursday, 29 February 2024.'
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from orchestra.agent import AgentReply
from orchestra.cards import AgentCard

__all__ = ["CLOCK_CARD", "ClockAgent", "add_months", "answer", "parse_date"]

_MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_name) if name}
_MONTHS |= {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name}
_MONTHS["sept"] = 9
_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))
_WEEKDAYS = {name.lower(): number for number, name in enumerate(calendar.day_name)}

_DATE_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\b(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})\b"),
    re.compile(r"\b(?P<y>\d{4})/(?P<m>\d{1,2})/(?P<d>\d{1,2})\b"),
    re.compile(rf"\b(?P<d>\d{{1,2}})(?:st|nd|rd|th)?(?: of)? (?P<mon>{_MONTH_RE})\.?,? (?P<y>\d{{4}})\b"),
    re.compile(rf"\b(?P<mon>{_MONTH_RE})\.? (?P<d>\d{{1,2}})(?:st|nd|rd|th)?,? (?P<y>\d{{4}})\b"),
    re.compile(r"\b(?P<d>\d{1,2})\.(?P<m>\d{1,2})\.(?P<y>\d{4})\b"),
)
# longest first: "the day after tomorrow" is not "tomorrow"
_RELATIVE_DAYS = {"day after tomorrow": 2, "day before yesterday": -2, "today": 0, "now": 0, "tomorrow": 1,
                  "yesterday": -1}  # fmt: skip
# 31/12/2024 or 12/31/2024: the reading whose day is above 12 is the only one; 03/04/2024 has two
_SLASHED_DATE = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b")
_UNIT_DAYS = {"day": 1, "week": 7, "fortnight": 14}
_NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "hundred": 100,
}  # fmt: skip
_OFFSET = re.compile(
    rf"(?P<neg>-\s*)?\b(?P<n>\d+(?:\.\d+)?|{'|'.join(_NUMBER_WORDS)})\s+(?P<unit>day|week|fortnight|month|year)s?\s*"
    r"(?P<dir>after|from|before|ago|later|earlier|since|past|hence)?",
)
_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800, "fortnight": 1209600}
_UNITS_IN = re.compile(
    r"\b(?P<small>second|minute|hour|day|week)s\s+(?:are\s+)?(?:there\s+)?in\s+(?:a|an|one)\s+"
    r"(?P<big>second|minute|hour|day|week|fortnight|month|year)\b"
)
# a given clock time or a shift of hours: "3pm", "9:30", "in 3 hours", "convert"; the clock tells the time now only
_GIVEN_TIME = re.compile(
    r"\b\d{1,2}(?::\d{2})?\s*(?:am|pm|a\.m\.|p\.m\.)|\b\d{1,2}:\d{2}\b|\bconvert\b|"
    r"\b(?:\d+|an?|one|two|three|four|five|six|twelve)\s+(?:hours?|minutes?)\b"
)


def add_months(start: date, months: int) -> date:
    """``start`` moved by whole months, clamped to the month's last day (31 Jan + 1 month = 28/29 Feb)."""
    index = start.year * 12 + (start.month - 1) + months
    year, month = divmod(index, 12)
    if not 1 <= year <= 9999:
        raise ValueError(f"year {year} is out of range")
    day = min(start.day, calendar.monthrange(year, month + 1)[1])
    return date(year, month + 1, day)


def parse_date(text: str, today: date) -> list[tuple[int, date]]:
    """Every date written in ``text`` (ISO, "March 5, 2024", "5 March 2024", 05.03.2024, today/tomorrow/
    yesterday, "next Friday"), with its position, in order of appearance."""
    found: list[tuple[int, date]] = []
    taken: list[range] = []
    lowered = text.lower()
    for pattern in _DATE_PATTERNS:
        for match in pattern.finditer(lowered):
            if any(match.start() in span for span in taken):
                continue
            parts = match.groupdict()
            month = _MONTHS[parts["mon"]] if parts.get("mon") else int(parts["m"])
            try:
                found.append((match.start(), date(int(parts["y"]), month, int(parts["d"]))))
            except ValueError as exc:
                raise ValueError(f"{match.group(0)!r} is not a valid date ({exc})") from None
            taken.append(range(match.start(), match.end()))
    for match in _SLASHED_DATE.finditer(lowered):
        if any(match.start() in span for span in taken):
            continue
        found.append((match.start(), _slashed_date(match)))
        taken.append(range(match.start(), match.end()))
    for words, days in _RELATIVE_DAYS.items():
        for match in re.finditer(rf"\b{words}\b", lowered):
            if not any(match.start() in span for span in taken):
                found.append((match.start(), today + timedelta(days=days)))
                taken.append(range(match.start(), match.end()))
    for match in re.finditer(rf"\b(next|last|this) ({'|'.join(_WEEKDAYS)})\b", lowered):
        target = _WEEKDAYS[match.group(2)]
        delta = (target - today.weekday()) % 7
        if match.group(1) == "next":
            delta = delta or 7
        elif match.group(1) == "last":
            delta = -((today.weekday() - target) % 7 or 7)
        found.append((match.start(), today + timedelta(days=delta)))
    return sorted(found, key=lambda item: item[0])


# Places people name that are no IANA zone's last component (the country, or a city another zone covers), and
# the abbreviations people write. An abbreviation names its region's zone, so that "PST" in July gives the
# time the people there keep, with the UTC offset shown in the answer. Countries with several zones (the
# United States, Canada, Australia, Russia) are left out: naming one would be a guess.
_PLACES = {
    "Asia/Kolkata": (
        "india, mumbai, bombay, delhi, new delhi, bangalore, bengaluru, chennai, madras, hyderabad, pune, ist"
    ),
    "America/Los_Angeles": (
        "san francisco, seattle, california, silicon valley, san diego, las vegas, pst, pdt, pt, pacific"
    ),
    "America/Denver": "mst, mdt, mountain",
    "America/Chicago": "houston, dallas, austin, texas, cst, cdt, ct, central",
    "America/New_York": (
        "washington dc, boston, miami, atlanta, philadelphia, nyc, new york city, est, edt, et, eastern"
    ),
    "Asia/Shanghai": "china, beijing, peking, shenzhen, guangzhou",
    "America/Sao_Paulo": "brazil, rio, rio de janeiro, brasilia",
    "America/Argentina/Buenos_Aires": "argentina, buenos aires",
    "Asia/Tokyo": "japan, osaka, kyoto, jst",
    "Asia/Seoul": "korea, south korea, kst",
    "Asia/Taipei": "taiwan",
    "Asia/Ho_Chi_Minh": "vietnam, hanoi, saigon, ho chi minh city",
    "Asia/Bangkok": "thailand",
    "Asia/Singapore": "sgt",
    "Asia/Hong_Kong": "hkt",
    "Asia/Manila": "philippines",
    "Asia/Jakarta": "indonesia",
    "Asia/Karachi": "pakistan",
    "Asia/Dubai": "uae, united arab emirates, abu dhabi",
    "Asia/Jerusalem": "israel, tel aviv",
    "Europe/London": "uk, united kingdom, england, britain, great britain, scotland, wales, edinburgh, manchester, bst",
    "Europe/Dublin": "ireland",
    "Europe/Paris": "france, cet, cest",
    "Europe/Berlin": "germany, munich, frankfurt, hamburg",
    "Europe/Madrid": "spain, barcelona",
    "Europe/Rome": "italy, milan",
    "Europe/Amsterdam": "netherlands, holland",
    "Europe/Brussels": "belgium",
    "Europe/Zurich": "switzerland, geneva",
    "Europe/Vienna": "austria",
    "Europe/Stockholm": "sweden",
    "Europe/Oslo": "norway",
    "Europe/Copenhagen": "denmark",
    "Europe/Helsinki": "finland",
    "Europe/Athens": "greece, eet, eest",
    "Africa/Cairo": "egypt",
    "Africa/Nairobi": "kenya",
    "Africa/Lagos": "nigeria",
    "Africa/Johannesburg": "south africa, cape town",
    "Pacific/Auckland": "new zealand, wellington",
    "Australia/Sydney": "aest, aedt, canberra",
    "UTC": "utc, gmt, z, zulu",
}
# Names that only count after "in": as bare words "pt", "et", "ct", "z" and "central" mean other things.
_BARE_ABBREVIATIONS = ("ist", "pst", "pdt", "mst", "mdt", "cst", "cdt", "est", "edt", "jst", "kst", "sgt", "hkt",
                       "bst", "cet", "cest", "eet", "eest", "aest", "aedt", "utc", "gmt")  # fmt: skip
_OFFSET_ZONE = re.compile(r"\b(?:utc|gmt)\s*([+-])\s*(\d{1,2})(?::?(\d{2}))?\b")
# What follows "in" without naming a place: "in 3 days", "in a week", "hours in a day", "in March", "in total".
_NOT_PLACES = {"a", "an", "total", "general", "advance", "time", "which", "what", "this", "that", "it", "my",
               "your", "order", "future", "past", "morning", "afternoon", "evening", "leap", "history"}  # fmt: skip
_UNITS = re.compile(r"\b(?:second|minute|hour|day|night|week|fortnight|month|year|decade|century)s?\b")
# Words that end a place's name: "in Tokyo right now", "in Paris today", "in Rome at noon".
_AFTER_PLACE = re.compile(r"\s+(?:right|now|today|tonight|tomorrow|yesterday|currently|at|on|in|and|please|then|"
                          r"time|for|from|to|is|was)\b.*$")  # fmt: skip


class _UnknownPlace(ValueError):
    """The query names a place or time zone the clock cannot resolve; answering in another zone would mislead."""


def _slashed_date(match: re.Match[str]) -> date:
    first, second, year = (int(part) for part in match.groups())
    if first > 12 or first == second:
        day, month = first, second
    elif second > 12:
        day, month = second, first
    else:
        raise ValueError(
            f"{match.group(0)} could be {first} {calendar.month_name[second]} or {second} "
            f"{calendar.month_name[first]} {year}; please write it as {year}-{second:02d}-{first:02d} or "
            f"{first} {calendar.month_name[second]} {year}"
        )
    try:
        return date(year, month, day)
    except ValueError as exc:
        raise ValueError(f"{match.group(0)!r} is not a valid date ({exc})") from None


@cache
def _zone_names() -> dict[str, str]:
    """Lower-cased IANA names, their last component (``tokyo`` → ``Asia/Tokyo``), and the places and
    abbreviations of ``_PLACES``."""
    names: dict[str, str] = {}
    for name in sorted(available_timezones() - {"Factory", "localtime"}):
        names[name.lower()] = name
        last = name.rsplit("/", 1)[-1].replace("_", " ").lower()
        names.setdefault(last, name)
    for zone, places in _PLACES.items():
        # the region's zone wins over an IANA name of the same spelling ("EST" is a fixed UTC-5 in zoneinfo)
        names |= {place: zone for place in places.split(", ")}
    return names


@cache
def _zone_areas() -> frozenset[str]:
    return frozenset(name.split("/", 1)[0].lower() for name in available_timezones() if "/" in name)


def _plain_letters(text: str) -> str:
    # "São Paulo" → "Sao Paulo", so that it meets IANA's America/Sao_Paulo
    return "".join(char for char in unicodedata.normalize("NFKD", text) if not unicodedata.combining(char))


def _find_zone(text: str) -> tuple[tzinfo, str] | None:
    """The time zone the query names and how to call it, or None when it names none; raises `_UnknownPlace`
    when it names one the clock does not know."""
    plain = _plain_letters(text)
    lowered = plain.lower()
    for match in re.finditer(r"\b([a-z]+)((?:/[a-z_+\-0-9]+)+)\b", lowered):
        if match.group(1) in _zone_areas():
            name = _zone_names().get(match.group(0))
            if not name:
                raise _UnknownPlace(plain[match.start() : match.end()])
            return ZoneInfo(name), name
    offset = _OFFSET_ZONE.search(lowered)
    if offset:
        hours, minutes = int(offset.group(2)), int(offset.group(3) or 0)
        if hours > 14 or minutes > 59:  # the world's offsets run from UTC-12 to UTC+14
            raise _UnknownPlace(plain[offset.start() : offset.end()])
        sign = -1 if offset.group(1) == "-" else 1
        label = f"UTC{offset.group(1)}{hours}" + (f":{minutes:02d}" if minutes else "")
        return timezone(sign * timedelta(hours=hours, minutes=minutes), label), label
    # a city, country or zone name after "in": "time in New York", "in tokyo right now", "in the UK"
    for match in re.finditer(r"\bin ((?:the )?[a-z][a-z .'\-]*)", lowered):
        phrase = _AFTER_PLACE.sub("", match.group(1)).strip(" .?!,'")
        words = phrase.split()
        if words and words[0] == "the":
            words = words[1:]
        for length in range(min(4, len(words)), 0, -1):
            name = _zone_names().get(" ".join(words[:length]))
            if name:
                return ZoneInfo(name), name
        if words and words[0] not in _NOT_PLACES | set(_NUMBER_WORDS) | set(_MONTHS) | set(_WEEKDAYS) and not (
            _UNITS.search(phrase)
        ):
            start = match.start(1) + match.group(1).index(phrase)
            raise _UnknownPlace(plain[start : start + len(phrase)])
    for code in _BARE_ABBREVIATIONS:
        if re.search(rf"\b{code}\b", lowered):
            name = _zone_names()[code]
            return ZoneInfo(name), name
    return None


def _decline(text: str) -> AgentReply:
    # marked declined so that the aggregators never count "Sorry, I only answer date and time questions" as an
    # answer beside the agent that did answer
    return AgentReply(answer=text, declined=True)


def _format_date(day: date) -> str:
    return f"{calendar.day_name[day.weekday()]}, {day.day} {calendar.month_name[day.month]} {day.year}"


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}{'' if count == 1 else 's'}"


def _weeks_and_days(days: int) -> str:
    weeks, rest = divmod(days, 7)
    return f"{_plural(weeks, 'week')} and {_plural(rest, 'day')}"


def _days_and_weeks(days: int) -> str:
    return f"{_plural(days, 'day')} ({_weeks_and_days(days)})"


def _units_in(small: str, big: str) -> str | AgentReply:
    """How many of one unit of time there are in a bigger one: exact for the fixed units, a range for a month."""
    article = "an" if big == "hour" else "a"
    if big in _SECONDS:
        if _SECONDS[small] > _SECONDS[big]:
            return _decline(f"Sorry, a {small} is longer than {article} {big}.")
        return f"{_plural(_SECONDS[big] // _SECONDS[small], small)} in {article} {big}."
    if small == "week":
        if big == "month":
            return "4 weeks and 0 to 3 days in a month, depending on the month."
        return "52 weeks and 1 day in a year (52 weeks and 2 days in a leap year)."
    per_day = _SECONDS["day"] // _SECONDS[small]
    if big == "year":
        return f"{365 * per_day} {small}s in a year ({366 * per_day} in a leap year)."
    return f"{28 * per_day} to {31 * per_day} {small}s in a month, depending on the month."


def _shifted(offsets: list[re.Match[str]], lowered: str, base: date) -> str | AgentReply:
    """``base`` moved by every "N unit" of the query together ("2 years and 3 months from today")."""
    directions = [offset.group("dir") for offset in offsets if offset.group("dir")]
    explicit_minus = re.search(r"\b(minus|subtract|before|ago|earlier)\b", lowered)
    sign = -1 if (directions and directions[0] in ("before", "ago", "earlier")) or explicit_minus else 1
    parts = []
    for offset in offsets:
        count = offset.group("n")
        if len(count) > 7:
            # ten million days already leave the calendar; int() of thousands of digits would raise instead
            return _decline("Sorry, that date is outside the calendar I can handle (years 1 to 9999).")
        if "." in count:
            return _decline(f"Sorry, I only move a date by whole {offset.group('unit')}s, not {count}.")
        amount = int(count) if count.isdigit() else _NUMBER_WORDS[count]
        parts.append((-amount if offset.group("neg") else amount, offset.group("unit")))
    if all(amount < 0 for amount, _ in parts):  # "-5 days from today" is 5 days before today
        sign, parts = -sign, [(-amount, unit) for amount, unit in parts]
    months = sum(amount * (12 if unit == "year" else 1) for amount, unit in parts if unit in ("month", "year"))
    days = sum(amount * _UNIT_DAYS[unit] for amount, unit in parts if unit in _UNIT_DAYS)
    try:
        result = add_months(base, sign * months) + timedelta(days=sign * days)
    except (OverflowError, ValueError):
        return _decline("Sorry, that date is outside the calendar I can handle (years 1 to 9999).")
    amounts = " and ".join(_plural(amount, unit) for amount, unit in parts)
    way = "before" if sign < 0 else "after"
    return f"{_format_date(result)} ({amounts} {way} {_format_date(base)})."


class ClockAgent:
    """Answers date and time questions exactly. ``now`` returns the current aware datetime (injectable)."""

    def __init__(self, now: Callable[[], datetime] | None = None, *, default_zone: str = "UTC") -> None:
        self.now = now or (lambda: datetime.now(UTC))
        try:
            self.default_zone = ZoneInfo(default_zone)
        except ZoneInfoNotFoundError:
            raise ValueError(f"default_zone {default_zone!r} is not an IANA time zone name") from None

    def __call__(self, query: str) -> str | AgentReply:
        return self.answer(query)

    def answer(self, query: str) -> str | AgentReply:
        """The reply to one query: the exact answer as text, or a polite refusal marked declined (an
        `AgentReply`) when the query is not a date or time question the clock can answer."""
        now = self.now()
        if now.tzinfo is None:
            now = now.replace(tzinfo=self.default_zone)
        try:
            found = _find_zone(query)
        except _UnknownPlace as unknown:
            # answering in the default zone would give a confident time for a place the clock never looked up
            return _decline(
                f"Sorry, I don't know the time zone of {unknown}. Name a city, a country with one time zone, an "
                "IANA zone such as Europe/Paris, or an offset such as UTC+2."
            )
        zone, zone_name = found if found else (self.default_zone, None)
        local_now = now.astimezone(zone)
        today = local_now.date()
        lowered = re.sub(r"(?<=\d),(?=\d{3}\b)", "", query.lower())  # 10,000 days -> 10000 days
        try:
            dates = [day for _, day in parse_date(lowered, today)]
        except ValueError as exc:
            return _decline(f"Sorry, {exc}.")

        units = _UNITS_IN.search(lowered)
        if units:
            return _units_in(units.group("small"), units.group("big"))

        if re.search(r"\b(time|clock|hour)\b", lowered) and not re.search(r"\b(days?|weeks?|months?)\b", lowered):
            if _GIVEN_TIME.search(_OFFSET_ZONE.sub(" ", lowered)):
                return _decline(
                    "Sorry, I only tell the current time in a place; I cannot convert a given time between time "
                    "zones or add hours to it."
                )
            where = zone_name or local_now.tzname()
            return f"It is {local_now:%H:%M} on {_format_date(local_now.date())} in {where} (UTC{local_now:%z})."

        if not dates and re.search(r"\b(what|which) (year|month)\b", lowered):
            return f"It is {local_now:%B} {today.year}." if "month" in lowered else f"It is {today.year}."

        offsets = list(_OFFSET.finditer(lowered))
        rest = lowered
        for offset in offsets:
            rest = rest.replace(offset.group(0), " ")
        if offsets and not re.search(r"\b(between|from .* (to|until|and))\b", rest):
            return _shifted(offsets, lowered, dates[0] if dates else today)

        counting = re.search(
            r"\b(how many (days|weeks|months)|(days|weeks) (until|till|to|since|left)|how long)\b", lowered
        )
        if len(dates) == 1 and counting:
            if dates[0] < today and not re.search(r"\b(since|ago)\b", lowered):
                days = (today - dates[0]).days
                return f"{_format_date(dates[0])} has passed: it was {_days_and_weeks(days)} ago."
            dates = [today, dates[0]] if dates[0] >= today else [dates[0], today]
        if len(dates) >= 2 and re.search(r"\b(between|from|until|till|to|since|how many|how long)\b", lowered):
            first, second = dates[0], dates[1]
            days = (second - first).days
            between = f"{_plural(abs(days), 'day')} between {_format_date(first)} and {_format_date(second)}"
            if days < 0:  # the order the user gave goes back in time: say so rather than drop the sign
                return f"{between}: the second is {_days_and_weeks(-days)} before the first."
            return f"{between} ({_weeks_and_days(days)})."

        if dates and re.search(r"\b(day of the week|weekday|what day|which day)\b", lowered):
            return f"{_format_date(dates[0])}."

        if re.search(r"\b(today|date|day is it|what day)\b", lowered) or (dates and not re.search(r"\d", lowered)):
            day = dates[0] if dates else today
            return f"{'Today is ' if day == today else ''}{_format_date(day)}."

        if dates:
            return f"{_format_date(dates[0])}."
        return _decline(
            "Sorry, I only answer date and time questions: today's date, the weekday of a date, days between two "
            "dates, a date plus or minus days/weeks/months, or the time in a time zone."
        )


_DEFAULT = ClockAgent()


def answer(query: str) -> str | AgentReply:
    """The date/time agent's reply on the real clock (UTC unless the query names a time zone); a refusal is an
    `AgentReply` marked declined."""
    return _DEFAULT.answer(query)


CLOCK_CARD = AgentCard(
    id="clock",
    name="Date and time",
    description=(
        "Dates and times, computed exactly from the system clock: today's date, the day of the week of any date, "
        "the number of days between two dates, a date plus or minus a number of days, weeks, months or years, "
        "and the current time in a named time zone or city (IANA zones such as Europe/Paris)."
    ),
    skills=("dates", "calendar", "time zones", "date arithmetic"),
    examples=(
        "what is today's date?",
        "what day of the week is 2024-02-29?",
        "how many days between 2024-01-01 and 2024-12-25?",
        "what date is 90 days after March 3, 2025?",
        "what time is it in Asia/Tokyo?",
        "what was the date 3 weeks ago?",
    ),
    backend="function",
    function="orchestra.agents.clock:answer",
)
"""The date/time agent's card: routers read its description and examples."""
