"""Every example in examples/ runs offline, through its own main(), and does what it says."""

from __future__ import annotations

import runpy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = sorted(p for p in (Path(__file__).parents[1] / "examples").glob("*.py") if p.name != "__init__.py")


def check_onboard_and_replay(result: dict[str, Any]) -> None:
    assert result["first"] == "42 km = 26.098 miles"
    assert result["before"] is True  # no agent reverses text yet: out of scope
    assert result["after"] == "artsehcro" and result["after_agents"] == ["reverse"]
    assert result["replay"] == "artsehcro" and result["replay_status"] == "ok"
    assert result["counterfactual_agents"] == ["reverse", "units", "wordcount"]
    replayed = result["latest_runs"][0][1]
    assert result["latest_runs"] == [("counterfactual", replayed), ("exact", replayed)]


def check_train_router_on_data(result: dict[str, Any]) -> None:
    assert result["trained_agents"] == 149 and result["scored"] == 300
    assert result["top1"] > 0.8 and result["set_hit"] >= result["top1"]  # few-shot on frozen MiniLM: about 0.85
    # the query belongs to the held-out agent: before its card is added another agent takes it, after it is routed there
    assert result["before_agents"] and "travel:exchange_rate" not in result["before_agents"]
    assert result["after_agents"] == ["travel:exchange_rate"] and result["status"] == "ok"
    assert result["after_answer"].startswith("[travel:exchange_rate]")


def check_durable_runs(result: dict[str, Any]) -> None:
    assert result["first_status"] == "ok" and result["weather_attempts"] == 3 and result["first_failed"] == ["ledger"]
    assert result["resumed_status"] == "ok" and "1,240.00 EUR" in result["resumed_answer"] and "18 °C" in result["resumed_answer"]
    assert result["weather_calls_on_resume"] == 0 and result["ledger_calls_on_resume"] == 1  # served, not called again
    assert result["paused_status"] == "interrupted" and result["paused_agents"] == ["pay"]
    assert result["approved_status"] == "ok" and result["paid"] == ["Pay invoice 7"]  # paid once, after approval


def check_openai_client(result: dict[str, Any]) -> None:
    assert result["models"] == ["orchestra"]
    assert result["answers"] == {"units": "42 km = 26.098 miles", "wordcount": "3 words, 14 characters"}
    assert result["answer"] == "**units**: 42 km = 26.098 miles\n\n**wordcount**: 3 words, 14 characters"
    assert result["scores"]["units"] > result["scores"]["wordcount"] >= 0.35  # both clear the workflow's threshold
    assert result["streamed"] == result["answer"] and result["events"][0] == "decision" and "aggregate" in result["events"]
    assert result["narrowed_agents"] == ["units"]  # max_agents=1 for that request only
    assert result["unauthorised"] == ("AuthenticationError", 401)
    assert result["before_out_of_scope"] is True and result["before_agents"] == []  # no agent reverses text yet
    assert result["onboarded"] == 201 and result["after"] == "artsehcro" and result["after_agents"] == ["reverse"]
    assert result["tree"][0]["calls"] == ["reverse"] and result["tree"][-1] == {"kind": "aggregate", "round": 1, "answer": "artsehcro"}
    name, status, message = result["bad_request"]
    assert (name, status) == ("BadRequestError", 400) and message.startswith("n: ")


def check_model_routing(result: dict[str, Any]) -> None:
    settings = result["settings"]
    n = result["questions"]
    zero, cheap, alone = settings["w = 0"], settings["w = 0.8"], settings["GPT-4 alone"]
    middle = settings[f"w = {result['calibrated_w']:g}"]
    assert result["trained_models"] == 10 and 0 < result["calibrated_w"] < 0.8
    # every run called its chosen model through the registry: the recorded answer, at the recorded cost
    for setting in settings.values():
        assert sum(setting["choices"].values()) == n and setting["answered_from_record"] == n
        assert setting["mean_cost_usd"] == pytest.approx(setting["recorded_cost_usd"])
    assert alone["choices"] == {"gpt-4-1106-preview": n}
    # w steers the choice, measured on the stored runs: a router that always took GPT-4 (or always the cheapest
    # model) fails here
    assert cheap["mean_cost_usd"] < 0.2 * zero["mean_cost_usd"] and cheap["quality"] < zero["quality"]
    assert zero["mean_cost_usd"] >= middle["mean_cost_usd"] >= cheap["mean_cost_usd"]
    assert cheap["choices"].get("gpt-4-1106-preview", 0) < zero["choices"].get("gpt-4-1106-preview", 0)
    assert len(middle["choices"]) >= 2  # the calibrated w mixes models
    # onboarded by its card: a candidate from the next decision on, priced at the card's mean cost per query
    assert "zero-one-ai/Yi-34B-Chat" not in result["before_candidates"] and len(result["before_candidates"]) == 10
    assert "zero-one-ai/Yi-34B-Chat" in result["after_candidates"] and len(result["after_candidates"]) == 11
    assert 0.0 <= result["onboarded"]["quality"] <= 1.0
    assert result["onboarded"]["cost_usd"] == pytest.approx(result["onboarded_card_cost"])
    # the trace holds the decision: chosen model (the one called), its predicted quality and cost, every candidate
    trace = result["trace"]
    assert trace["status"] == "ok" and trace["chosen"] == trace["called"]
    assert trace["meta"]["router"] == "graph-router" and trace["meta"]["cost_weight"] == result["calibrated_w"]
    chosen = next(score for score in trace["scores"] if score["id"] == trace["chosen"])
    assert trace["meta"]["predicted_quality"] == pytest.approx(chosen["detail"]["quality"])
    assert trace["meta"]["predicted_cost_usd"] == pytest.approx(chosen["detail"]["cost_usd"])
    assert chosen["score"] == max(score["score"] for score in trace["scores"]) and len(trace["scores"]) == 11


def check_tcar_on_a_local_model(result: dict[str, Any]) -> None:
    runs = result["runs"]
    assert [run["status"] for run in runs] == ["ok"] * 3
    for run in runs:
        # constrained decoding: every raw answer reads as a JSON object naming agents of its prompt's list
        assert run["parsed"] and run["reasoning"]
        assert set(run["chosen"]) <= set(run["candidates"]) and len(run["chosen"]) <= 2
        assert run["out_of_scope"] == (not run["chosen"])
        # the trace holds the run as it went: the calls the decision made, every token the run counted
        assert sorted(run["answers"]) == run["observations"] == sorted(run["chosen"])
        assert run["router_tokens"] > 0 and run["model_call_tokens"] == run["run_tokens"] == run["result_tokens"]
        # the refiner's model is called only to merge two real answers or more (refusals are not merged)
        assert run["refined"] == (len(set(run["answers"]) - set(run["declined"])) >= 2)
        assert run["refined"] == (run["refine_tokens"] > 0) and run["answer"]
    tools = {"units": "42 km = 26.10 miles", "wordcount": "'the marathon is long' has 4 words and 20 characters"}
    assert all(answer == tools[agent] for agent, answer in runs[0]["answers"].items() if agent in tools)
    # onboarded by its card alone: offered at the next decision (in its prompt and candidates), never before
    assert result["onboarded"] == "roman"
    assert all("roman" not in run["candidates"] and "- roman:" not in run["prompt"] for run in runs[:2])
    assert "roman" in runs[2]["candidates"] and "- roman: Converts whole numbers to Roman numerals" in runs[2]["prompt"]
    if "roman" in runs[2]["chosen"]:  # whether the 135M router picks it is up to the model
        assert runs[2]["answers"]["roman"] == "1994 in Roman numerals is MCMXCIV"


def check_router_r1_loop(result: dict[str, Any]) -> None:
    assert len(result["runs"]) == 2
    for run in result["runs"]:
        loop, meta = run["loop"], run["finish_meta"]
        assert run["status"] == loop["status"] == "ok" and run["answer"] == loop["answer"]
        # every turn in the protocol (constrained JSON turns), and at most max_rounds consultations before the answer
        assert meta["format_valid"] is True and meta["format_violations"] == []
        assert run["decisions"] == [turn["kind"] for turn in loop["rounds"]] and run["decisions"][-1] == "finish"
        assert set(run["decisions"][:-1]) <= {"dispatch"} and meta["rounds"] == len(run["decisions"]) - 1 <= result["max_rounds"]
        # the trace's consultations are the run's: model, query, information and cost, in order, from the pool
        consulted = [c for turn in loop["rounds"] for c in turn["consultations"]]
        assert [(c["model"], c["query"], c["information"], c["cost_usd"]) for c in consulted] == run["observations"]
        assert meta["consulted"] == [c["model"] for c in consulted] and set(meta["consulted"]) <= set(result["pool"])
        assert all(turn["router_turns"] >= 1 and turn["router_tokens"] > 0 for turn in loop["rounds"])
        assert run["model_calls"] == sum(turn["router_turns"] for turn in loop["rounds"])
        # the router model is free: the run's cost is what the consulted models' recorded answers cost
        assert loop["pool_cost_usd"] == pytest.approx(loop["run_cost_usd"])
        # exact replay: the same trace and answer, with no model called
        replayed = run["replay"]
        assert replayed["status"] == "ok" and replayed["answer"] == run["answer"] and replayed["same_tree"]
        assert replayed["model_calls"] == 0 and run["model_calls"] > 0
        assert replayed["cost_usd"] == pytest.approx(loop["run_cost_usd"])


def check_fused_answers(result: dict[str, Any]) -> None:
    assert result["questions"] == 60 and result["tasks"] == ["arc-challenge", "winogrande"]
    assert result["dispatched"] == [3] and result["weights_sum_to_one"]  # top-3 models per question, weights p renormalised
    # the run's answer is the p-weighted vote of its observations, and the option `bench fusion` fuses from the same p
    # (with p this flat that vote is a majority: the weights would choose only if the three answers all differed)
    assert result["fused_is_weighted_vote"] and result["fused_as_bench"] and result["fusion"] == "weighted-vote"
    assert result["overridden"] >= 1  # the vote did not merely pass the top-1 model's answer on
    assert result["cost_as_recorded"]  # each answer is a recorded response, paid at its recorded cost
    # routing: the router's top-1 (mostly GPT-4) and the fused vote beat a single model on average and the vote of
    # three models drawn at random (about 0.87, 0.83, 0.68 and 0.72); GPT-4 alone is a bar the vote need not clear
    assert result["top1_models"].get("gpt-4-1106-preview", 0) > result["questions"] / 2
    assert result["top1_accuracy"] >= result["mean_single_accuracy"] + 0.1
    assert result["fused_accuracy"] >= result["mean_single_accuracy"] + 0.1
    assert result["fused_accuracy"] >= result["random_three_accuracy"] + 0.05
    assert 0.75 <= result["gpt4_accuracy"] <= 1.0
    # the held-out model, onboarded by card, is a candidate with a probability at the next decision, untrained on
    assert (result["candidates_before"], result["candidates_after"]) == (10, 11)
    assert result["onboarded_meta"] == ["claude-v2"] and result["onboarded_seen"] == "no" and result["onboarded_p"] > 0
    assert "claude-v2" not in result["known_after"] and result["onboarded_status"] == "ok"


def check_inside_a_langgraph_graph(result: dict[str, Any]) -> None:
    # the user's triage normalised the request; the orchestra node's run answered it; format wrote the reply
    assert result["query"] == "how many miles is a 42 km marathon?"
    assert result["answer"] == "42 km = 26.098 miles" and result["agents"] == ["units"]
    assert result["reply"] == f"42 km = 26.098 miles  [units; run {result['run_id'][:8]}]"
    # a tracer given to the user's graph sees its nodes and Orchestra's, these with the run's id, tags and metadata
    assert result["outer_nodes"] == ["triage", "orchestra", "format"] and result["inner_nodes"] == ["aggregate", "call", "router"]
    assert result["tracer_run_ids"] == [result["run_id"]] and result["inner_tags_ok"] and result["inner_metadata_ok"]
    # the run read back from the store by that id
    assert result["stored_status"] == "ok" and result["stored_query"] == result["query"]
    decision, aggregate = result["tree"]
    assert decision["calls"] == ["units"] and [child["agent"] for child in decision["children"]] == ["units"]
    assert aggregate == {"kind": "aggregate", "round": 1, "answer": "42 km = 26.098 miles"}
    scores = result["decision_scores"]
    assert result["decision_calls"] == ["units"] and scores["units"] >= 0.35 > max(scores["wordcount"], scores["reverse"])
    # streamed, sync (run) and async (arun): the run's events under the node's namespace, before the node's update
    for chunks, agents, answer in ((result["streamed"], {"wordcount", "units"}, "6 words, 18 characters"),
                                   (result["astreamed"], {"reverse"}, "artsehcro")):
        ours = [chunk for chunk in chunks if chunk["namespace"] == ()]
        assert [chunk["nodes"] for chunk in ours] == [["triage"], ["orchestra"], ["format"]]
        run_id = ours[1]["update"]["orchestra"]["run_id"]
        events = [chunk for chunk in chunks if chunk["mode"] == "custom"]
        assert [event["kind"] for event in events] == ["decision"] + ["call"] * len(agents) + ["aggregate"]
        assert {event["run_id"] for event in events} == {run_id}
        assert len({event["namespace"] for event in events}) == 1 and events[0]["namespace"][0].startswith("orchestra:")
        assert chunks.index(events[-1]) < chunks.index(ours[1])  # they came while the user's graph was running
        assert {event["what"].split(" -> ")[0].removeprefix("call: ") for event in events if event["kind"] == "call"} == agents
        assert answer in events[-1]["what"]
    # the user's recursion_limit, max_concurrency and checkpointer: both turns ran and were stored, no inner checkpoint
    assert result["turn_status"] == ["ok", "ok"] and result["turn_steps"] == [["decision", "call", "aggregate"]] * 2
    assert result["turn_replies"][0].startswith("42 km = 26.098 miles  [units;") and result["turn_replies"][1].startswith("hparggnal  [reverse;")
    assert result["checkpoint_namespaces"] == [""]
    # handed to workflow.run itself, those keys are refused, naming what sets them
    assert set(result["refused"]) == {"recursion_limit", "max_concurrency", "configurable"}
    assert "Budget.max_rounds" in result["refused"]["recursion_limit"] and "Budget.max_parallel_calls" in result["refused"]["max_concurrency"]


def check_custom_router(result: dict[str, Any]) -> None:
    assert result["trained_agents"] == ["calculator", "clock", "knowledge"]
    heldout = result["heldout"]  # queries written apart from the cards: the router learnt words, not the examples by heart
    assert heldout["in_scope"] == 12 and heldout["right"] >= 10 and heldout["refused"] == heldout["out_of_scope"] == 3
    percent, weekday, haiku = runs = result["runs"]
    for run in runs:
        # every run names the router and the file it was built from: what a replay rebuilds it with
        assert run["status"] == "ok" and run["router"]["name"] == "my-router" and run["router"]["checkpoint"] == result["checkpoint"]
        assert sorted(run["scores"]) == result["trained_agents"] and sum(run["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert run["rationale"]
    assert percent["agents"] == ["calculator"] and percent["answer"] == "42"
    assert weekday["agents"] == ["clock"] and weekday["answer"].startswith("Friday")
    for run in (percent, weekday):  # the chosen agent is the best-scored one
        assert run["scores"][run["agents"][0]] == max(run["scores"].values()) >= 0.4
    assert haiku["kind"] == "finish" and haiku["out_of_scope"] and haiku["agents"] == []
    # exact replays in a fresh Orchestra rebuilt the router from its checkpoint (not RecordedRouter's served decisions)
    for original, again in zip(runs, result["exact"]):
        assert (again["status"], again["replay_mode"], again["replay_of"]) == ("ok", "exact", original["run_id"])
        assert "recorded" not in again["router"] and again["router"]["checkpoint"] == result["checkpoint"]
        assert (again["answer"], again["scores"], again["rationale"]) == (original["answer"], original["scores"], original["rationale"])
    for original, other in zip(runs, result["counterfactual"]):
        assert other["router"]["name"] == "embedding" and (other["replay_mode"], other["replay_of"]) == ("counterfactual", original["run_id"])
        assert other["status"] == "ok" and other["scores"] != original["scores"]  # another router's own scores
    chat, cli_replay = result["cli_chat"], result["cli_replay"]
    assert chat["exit_code"] == 0 and chat["run"]["run_id"] in chat["stdout"] and chat["run"]["agents"] == ["clock"]
    assert chat["run"]["router"]["checkpoint"] == result["checkpoint"] and chat["run"]["answer"].startswith("60 days")
    assert cli_replay["exit_code"] == 0 and "not rebuilt" not in cli_replay["stderr"]
    assert (cli_replay["run"]["replay_mode"], cli_replay["run"]["replay_of"]) == ("exact", chat["run"]["run_id"])
    assert "recorded" not in cli_replay["run"]["router"] and cli_replay["run"]["status"] == "ok"
    # decisions are checked, not served: a different router saved over the checkpoint is a mismatch
    assert (result["tampered"]["status"], result["tampered"]["error"]) == ("error", "ReplayMismatch")
    # a process that never registered the router (no entry point) serves the record, and says so
    elsewhere = result["other_process"]
    assert elsewhere["exit_code"] == 0 and "UnknownRouterError" in elsewhere["warning"]
    assert elsewhere["run"]["router"]["recorded"] is True and elsewhere["run"]["replay_of"] == weekday["run_id"]


def check_custom_agent_and_aggregator(result: dict[str, Any]) -> None:
    run, arun, lone, judged = result["run"], result["arun"], result["stream"], result["judged"]
    for facts in (run, arun, lone, judged):
        assert facts["status"] == "ok" and facts["aggregator"]["name"] == "trusted-pick" and facts["answers"]["explainer"]
        # the agent class called the local model through its context: the call is traced under it and counted
        assert facts["model_calls"]["explainer"] == [("local-smollm2", "agent")] and facts["run_tokens"] == facts["model_call_tokens"] > 0
    # the tools answer exactly (sync run, then async arun) and decline what is not their job; trust picks them
    assert (run["answer"], run["meta"]["picked"], run["meta"]["by"], run["declined"]) == ("42 km = 26.10 miles", "units", "trust", ["rates"])
    assert (arun["answer"], arun["meta"]["picked"], arun["declined"]) == ("250 EUR = 270.00 USD", "rates", ["units"])
    assert lone["declined"] == ["rates", "units"] and lone["meta"]["picked"] == "explainer" and lone["answer"] == lone["answers"]["explainer"]
    # answer events of an aggregator of your own: its answer, whole, once made; never a model's words taken back
    for facts in (lone, judged):
        events = facts["events"]
        assert events["shown_is_the_answer"] and events["answer_events"] == 1 and events["restarts"] == 0
        assert events["answer_before_aggregate"] is False
    assert lone["events"]["token_writers"] == ["agent:explainer"]
    assert judged["events"]["token_writers"] == ["agent:explainer", "judge:-"]
    # the judge (a model call of the aggregator, traced under the aggregate step) picked one of the two answers
    assert judged["meta"]["by"] == "judge" and judged["model_calls"]["aggregate"] == [("local-smollm2", "judge")]
    assert judged["meta"]["picked"] in ("units", "explainer") and judged["answer"] == judged["answers"][judged["meta"]["picked"]]
    assert judged["aggregator"] == {"name": "trusted-pick", "trust": {"units": 1.0, "rates": 1.0}, "default_trust": 0.5, "judge": "local-smollm2"}
    decision, aggregate = judged["tree"]
    assert decision["calls"] == ["explainer", "units", "rates"] and aggregate["answer"] == judged["answer"]
    # exact replay: refused without the aggregator, served with it (no agent called, every model call from the record)
    assert "'trusted-pick'" in result["replay_refused"] and "replay(..., aggregator=...)" in result["replay_refused"]
    exact = result["exact"]
    assert (exact["status"], exact["replay_mode"], exact["replay_of"]) == ("ok", "exact", judged["run_id"])
    assert exact["answer"] == judged["answer"] and exact["tree"] == judged["tree"] and exact["meta"] == judged["meta"]
    assert exact["agent_calls"] == {"explainer": 0, "units": 0, "rates": 0} and set(exact["model_call_latencies_ms"]) == {0.0}
    assert exact["run_tokens"] == judged["run_tokens"]
    otherwise = result["otherwise"]  # the pick without its judge is not the aggregator that ran
    assert (otherwise["status"], otherwise["error"]) == ("error", "ReplayMismatch") and "differs in judge" in otherwise["message"]
    other = result["counterfactual"]
    assert (other["status"], other["replay_mode"], other["replay_of"]) == ("ok", "counterfactual", judged["run_id"])
    assert list(other["answers"]) == ["explainer"] and other["meta"]["picked"] == "explainer" and other["model_calls"]["aggregate"] == []  # one answer: no judge
    # resume: the service was down (a failed call, the run ok on the explainer's guess); resumed, only it runs again
    failed, resumed = result["failed"], result["resumed"]
    assert failed["status"] == "ok" and failed["failed"] == ["rates"] and failed["meta"]["picked"] == "explainer"
    assert (resumed["status"], resumed["replay_mode"], resumed["replay_of"]) == ("ok", "resume", failed["run_id"])
    assert resumed["answer"] == "20 EUR = 3,240.00 JPY" and resumed["meta"]["picked"] == "rates" and resumed["failed"] == []
    assert resumed["agent_calls"] == {"explainer": 0, "units": 0, "rates": 1}
    assert resumed["resumed"] == {"decision": "served", "units": "served", "explainer": "served", "rates": "live", "aggregate": "live"}
    assert resumed["answers"]["explainer"] == failed["answers"]["explainer"] and resumed["run_tokens"] == failed["run_tokens"]


def check_conversation(result: dict[str, Any]) -> None:
    from orchestra.runtime import HISTORY_TURNS

    first, second, third = python = result["python"]
    q1, q2, q3 = (turn["query"] for turn in python)
    assert [turn["answer"] for turn in python] == ["434", "43.4", "21.7"]  # each follow-up on the previous answer
    assert all(turn["agents"] == ["calculator"] and turn["status"] == "ok" for turn in python)
    # what the router and the agents were given, as the trace records it: the session's earlier exchanges
    assert first["history"] == [] and second["history"] == [("user", q1), ("assistant", "434")]
    assert third["history"] == [*second["history"], ("user", q2), ("assistant", "43.4")]
    other = result["other_session"]  # interleaved with A's turns, it sees only its own
    assert [turn["answer"] for turn in other] == ["1024", "102.4"]
    assert other[1]["history"] == [("user", other[0]["query"]), ("assistant", "1024")]
    assert len({first["session_id"], other[0]["session_id"]}) == 2 and {t["session_id"] for t in python} == {first["session_id"]}
    # the failed turn is stored, given the history so far, and is no turn of the history after it
    failed, after_failure = result["failed"], result["recap_after_failure"]
    assert (failed["status"], failed["error"], failed["agents"]) == ("error", "AgentError", ["fx"])
    history3 = [*third["history"], ("user", q3), ("assistant", "21.7")]
    assert failed["history"] == after_failure["history"] == history3 and after_failure["agents_read"] == {"recap": 6}
    assert after_failure["answer"] == f"You asked 3 questions: {q1!r}, {q2!r}, {q3!r}. The last answer was '21.7'."
    # resumed on the history it had, and in the session's history from then on, once, as its last turn
    resumed, after_resume = result["resumed"], result["recap_after_resume"]
    assert (resumed["status"], resumed["replay_mode"], resumed["replay_of"]) == ("ok", "resume", failed["run_id"])
    assert resumed["answer"] == "21.7 USD = 19.96 EUR (at 0.92 EUR per USD)" and resumed["agents_read"] == {"fx": 6}
    assert resumed["history"] == history3 and result["rates_calls"] == 2  # the failed call and the resumed one
    assert [content for role, content in after_resume["history"] if role == "user"] == [q1, q2, q3, after_failure["query"], failed["query"]]
    assert after_resume["history"][-1] == ("assistant", resumed["answer"]) and after_resume["agents_read"] == {"recap": 10}
    session = result["session_history"]
    assert session == [f"{role}: {content}" for role, content in after_resume["history"]] + [
        f"user: {after_resume['query']}", f"assistant: {after_resume['answer']}"]
    # replays of turn 2 run on the history it had, not the session's now, and join no history
    exact, counterfactual = result["exact"], result["counterfactual"]
    assert (exact["status"], exact["replay_mode"], exact["replay_of"], exact["answer"]) == ("ok", "exact", second["run_id"], "43.4")
    assert exact["history"] == counterfactual["history"] == second["history"]
    assert counterfactual["replay_mode"] == "counterfactual" and counterfactual["agents"] == ["calculator", "recap"]
    assert counterfactual["answer"] == f"**calculator**: 43.4\n\n**recap**: You asked 1 question: {q1!r}. The last answer was '434'."
    assert counterfactual["agents_read"] == {"recap": 2}
    assert result["session_history_after_replays"] == session
    assert result["runs_in_session"] == ["counterfactual", "exact", "resume"] + ["turn"] * 6
    asked_now = result["asked_now"]  # the same question in the session now is on its last answer
    assert asked_now["answer"] == "4.5" and asked_now["history"][-1] == ("assistant", "45") and len(asked_now["history"]) == 14
    # the server, given the conversation as messages, and the CLI, continuing a session, give the same history
    server, cli = result["server"], result["cli"]
    assert [turn["answer"] for turn in server] == ["434", "43.4", "21.7", after_failure["answer"]]
    assert [turn["history"] for turn in server] == [turn["history"] for turn in python] + [history3]
    assert result["server_sessions"] == 4  # each request a session of its own
    assert cli["exit_codes"] == [0, 0] and cli["printed"] == ["43.4", "21.7"]
    assert [turn["answer"] for turn in cli["turns"]] == ["434", "43.4", "21.7"]
    assert [turn["history"] for turn in cli["turns"]] == [turn["history"] for turn in python]
    assert {turn["session_id"] for turn in cli["turns"]} == {cli["session_id"]}
    # a session gives its last HISTORY_TURNS exchanges; the server what the client sent, all of it
    long_python, long_server = result["long_python"], result["long_server"]
    assert result["history_turns"] == HISTORY_TURNS
    assert len(long_python["history"]) == 2 * HISTORY_TURNS and long_python["agents_read"] == {"recap": 2 * HISTORY_TURNS}
    assert len(long_server["history"]) == 2 * HISTORY_TURNS + 2 and long_server["history"][2:] == long_python["history"]
    assert long_python["history"][-1] == ("assistant", "1") and long_server["answer"].startswith(f"You asked {HISTORY_TURNS + 1} questions")

def check_budgets_and_fallbacks(result: dict[str, Any]) -> None:
    def failed_then_answered(read: dict[str, Any], failing: str) -> None:
        # the failing model tried as often as the app's RetryPolicy allows, 50 ms apart, at no cost; then the fallback
        down, answered = [call for call in read["model_calls"] if call["model"] == failing], [call for call in read["model_calls"] if not call["error"]]
        assert [(call["error"], call["attempts"], call["tokens"], call["cost_usd"]) for call in down] == [("ModelUnavailableError", 2, 0, None)]
        assert 50 <= down[0]["ms"] < 5000 and answered and all(call["model"] == "smol" and call["cost_usd"] > 0 for call in answered)

    # 1. down, 503, 429: the fallback answered and its cost is the run's, the same in run, arun and stream
    for read in result["fallback"].values():
        assert read["status"] == "ok" and read["answer"] and read["calls"]["poet"]["model"] == "smol"
        failed_then_answered(read, "gpt-down")
        assert read["cost_usd"] == pytest.approx(sum(call["cost_usd"] or 0 for call in read["model_calls"]))
    http_failures = result["http_failures"]
    assert http_failures["requests"] == {"503": 2, "429": 2}  # each endpoint saw RetryPolicy.max_attempts requests
    for agent, model in (("critic", "busy"), ("reviewer", "limited")):
        assert http_failures["run"]["calls"][agent]["model"] == "smol"
        failed_then_answered({"model_calls": [c for c in http_failures["run"]["model_calls"] if c["model"] in (model, "smol")]}, model)
    # 2a. two calls started together went past max_cost_usd (the poet's fallback counted); the refiner's call was refused
    cost = result["cost"]
    assert cost["result"] == {"status": "error", "error": "BudgetExceeded", "limit": "max_cost_usd", "answer": None,
                              "answered": ["historian", "poet"]}
    assert cost["status"] == "error" and cost["error"]["limit"] == "max_cost_usd" and cost["error"]["allowed"] == 0.0001
    assert cost["error"]["used"] == pytest.approx(cost["cost_usd"]) and cost["cost_usd"] > 0.0001  # the overshoot
    assert cost["calls"]["poet"]["model"] == "smol" and cost["calls"]["poet"]["cost_usd"] > 0
    assert cost["aggregate_error"] == "BudgetExceeded" and "refine" not in [call["purpose"] for call in cost["model_calls"]]
    resumed = result["cost_resumed"]
    assert resumed["status"] == "ok" and (resumed["served"], resumed["live"]) == (3, 1) and resumed["replay_of"] == cost["run_id"]
    assert {agent: call["resumed"] for agent, call in resumed["calls"].items()} == {"poet": "served", "historian": "served"}
    live = [call for call in resumed["model_calls"] if call["ms"] > 0]  # copies of served calls take no time
    assert [call["purpose"] for call in live] == ["refine"]  # nothing paid again but the refiner
    assert resumed["cost_usd"] == pytest.approx(cost["cost_usd"] + live[0]["cost_usd"])  # the totals are the whole run's
    # 2b. one call at a time: the first call's tokens passed max_tokens, the second agent's model call was refused
    tokens = result["tokens"]
    assert tokens["status"] == "error" and tokens["error"]["limit"] == "max_tokens" and tokens["result_error"] == "BudgetExceeded"
    errors = sorted(str(call["error"]) for call in tokens["calls"].values())
    assert errors == ["BudgetExceeded", "None"] and tokens["tokens"] > 40 and len(tokens["model_calls"]) == 1
    assert {"run_finished", "token", "decision", "call"} <= set(tokens["events"])
    tokens_resumed = result["tokens_resumed"]
    assert tokens_resumed["status"] == "ok" and (tokens_resumed["served"], tokens_resumed["live"]) == (2, 2)
    assert sorted(call["resumed"] for call in tokens_resumed["calls"].values()) == ["live", "served"]
    # 2c. a dispatch over max_calls is refused before any call: nothing called, nothing spent
    calls = result["calls"]
    assert calls["error"]["limit"] == "max_calls" and calls["error"]["spent"] is False and calls["calls"] == {} and calls["cost_usd"] == 0
    # 2d. the hung model: stopped at max_seconds, sync and async, its model call recorded as stopped, the cost unknown
    for read in result["seconds"].values():
        assert read["status"] == "error" and read["error"]["limit"] == "max_seconds" and read["returned_s"] < 3
        assert read["calls"]["forecaster"]["error"] == "BudgetExceeded" and read["cost_usd"] is None
        assert [(call["model"], call["error"]) for call in read["model_calls"]] == [("stuck", "RunCancelled")]
    # the async run's request was cancelled; the sync run's was left open in its thread, past the run's end
    assert (result["seconds"]["async"]["requests_open"], result["seconds"]["sync"]["requests_open"]) == (0, 1)
    back = result["seconds_resumed"]
    assert back["status"] == "ok" and back["calls"]["forecaster"] == {"model": "stuck", "error": None, "cost_usd": back["cost_usd"], "resumed": "live"}
    # 3. routing per run: max_agents and min_score as the router reads them; cost_weight recorded; bad values named
    narrowed, strict = result["routing"]["narrowed"], result["routing"]["strict"]
    assert len(narrowed["calls"]) == 1 and max(narrowed["scores"], key=narrowed["scores"].get) in narrowed["calls"]
    assert narrowed["policy"] == {"cost_weight": 0.3, "max_agents": 1, "min_score": None}
    assert strict["out_of_scope"] is True and strict["calls"] == {} and strict["cost_usd"] == 0 and strict["policy"]["min_score"] == 0.95
    assert [message.split(":")[1].strip() for message in result["routing"]["bad"]] == [
        "RoutingPolicy.cost_weight", "RoutingPolicy.max_agents", "RoutingPolicy.min_score", "RoutingPolicy.max_agents",
        "routing must be a RoutingPolicy, got dict {'max_agents'", "Budget.max_cost_usd", "Budget.max_tokens", "Budget.max_cost"]
    # 4. the command line: stopped by --budget (exit 1), resumed with a raised limit and --fallback (exit 0); bad option: exit 2
    cli = result["cli"]
    assert cli["stopped"]["exit_code"] == 1 and cli["stopped"]["error"]["limit"] == "max_calls" and "BudgetExceeded" in cli["stopped"]["output"]
    assert cli["resumed"]["exit_code"] == 0 and cli["resumed"]["status"] == "ok" and cli["resumed"]["replay_of"] == cli["stopped"]["run_id"]
    assert cli["resumed"]["budget"]["max_calls"] == 2 and cli["resumed"]["calls"]["poet"]["model"] == "smol"
    failed_then_answered(cli["resumed"], "gpt-down")  # --retry max_attempts=2, then --fallback smol
    assert cli["bad"]["exit_code"] == 2 and "Budget.max_tokens" in cli["bad"]["output"]
    # over HTTP: 500 with the run id, the request's max_agents and min_score, 400 naming the field, the resume
    http = result["http"]
    assert http["over"]["status"] == 500 and http["over"]["error"]["code"] == "budget_exceeded" and http["over"]["orchestra"]["run_id"]
    assert http["one"]["status"] == 200 and len(http["one"]["orchestra"]["observations"]) == 1
    assert http["strict"]["status"] == 200 and http["strict"]["orchestra"]["out_of_scope"] is True
    assert http["bad"]["status"] == 400 and http["bad"]["error"]["param"] == "cost_weight"
    assert http["resumed"]["http_status"] == 201 and http["resumed"]["status"] == "ok" and http["resumed"]["budget"]["max_calls"] == 2
    assert http["resumed"]["resumed_from"] == http["over"]["orchestra"]["run_id"] and len(http["resumed"]["calls"]) == 2



def check_evaluate_a_router_on_past_runs(result: dict[str, Any]) -> None:
    rows = {row["query"]: row for row in result["rows"]}
    total = result["summary"]
    # the traffic, listed apart from every replay made since, with the statuses it ended with
    assert total["runs"] == len(rows) == 28 and result["by_status"] == {"ok": 24, "error": 2, "interrupted": 2}
    assert result["listed_traffic"] == 28 and result["listed_all"] == 28 * 4
    for row in rows.values():  # each run's three replays are linked to it, in its session
        assert row["modes"] == ("exact", "counterfactual", "counterfactual") and row["replay_of"] and row["sessions"]
    # exact: every run reproduced, failures, stops and pauses included, and no tool called
    assert total["reproduced"] == 28 and all(row["reproduced"] for row in rows.values())
    assert set(result["called"]["exact"].values()) == {0}
    # reusing the original's calls, an answer differs only where the router chose other agents; live, the agents
    # answer as they are now (search moved provider), so answers differ with the same agents
    assert total["answers_differ_same_agents"] == 0 and total["live_answers_differ_same_agents"] >= 1
    assert total["served"] > 0 and 0 < total["agreement"] < 1
    for row in rows.values():
        if row["agree"] and row["status"][0] == "ok":
            assert row["answers"][1] == row["answers"][0] and row["cost"][1] == pytest.approx(row["cost"][0])
            assert row["served"][1] == 0 and row["tokens"][1] == row["tokens"][0]
    assert sum(result["called"]["live"].values()) > sum(result["called"]["reused"].values())
    moved = rows["who won the 2022 world cup?"]
    assert moved["answers"][1] == moved["answers"][0] and moved["answers"][2].startswith("Top result: ")
    assert moved["cost"][:2] == (0.004, 0.004) and moved["cost"][2] == pytest.approx(0.0015)
    # paused for approval: every replay stops before the refund, the exact one naming the original to resume
    paused = rows["please refund order 5521, the parcel never arrived"]
    assert paused["status"] == ("interrupted",) * 3 and paused["error"] == ("ApprovalRequired",) * 3
    assert "awaited approval in the original run" in paused["exact_error"] and result["calls"]["refund"] == 0
    # stopped by its caller: reproduced as stopped, run to its end by the other router
    stopped = rows["what is 12% of 1,250?"]
    assert stopped["status"] == ("interrupted", "ok", "ok") and stopped["answers"][1:] == ("150", "150")
    # failed: run again whole, the tool still down
    failed = rows["and 30000 yen in euros?"]
    assert failed["status"] == ("error",) * 3 and failed["error"] == ("AgentError",) * 3 and failed["served"] == (0, 1)
    # turn 3 of a conversation, replayed on the two exchanges it had; no replay joins a session's history
    third = rows["now divide it by 2"]
    assert third["history"] == (2, 2, 2) and third["answers"] == ("21.7", "21.7", "21.7")
    budget = result["histories"]["budget"]
    assert budget[::2] == result["budget_turns"] and len(budget) == 8
    # an agent removed since: reproduced exactly, no candidate for the other router
    gone = rows["what's the weather in Tokyo?"]
    assert "weather" in gone["agents"][0] and gone["reproduced"]
    assert "weather" not in gone["agents"][1] and "weather" not in gone["live_agents"]
    # the command line: the traffic's ids, replayed in one process, one exactly
    cli = result["cli"]
    assert cli["ids_exit"] == 0 and len(cli["ids"]) == 2 and set(cli["ids"]) <= set(result["past"])
    assert cli["batch_exit"] == 0 and "2 counterfactual replays with set" in cli["batch"]
    assert all(run_id[:8] in cli["batch"] for run_id in cli["ids"])
    assert cli["single_exit"] == 0 and f"exact replay of {cli['ids'][0]}" in " ".join(cli["single"].split())

def check_benchmark_your_own_router(result: dict[str, Any]) -> None:
    module = "examples.benchmark_your_own_router"
    clinc = result["clinc150"]
    assert clinc["comparison_rows"] == [f"{module}:CentroidRouter", "embedding"]
    for name, facts in clinc["routers"].items():
        report, printed, rescored = facts["report"], facts["printed"], facts["rescored"]
        # the harness's figures are the predictions file's, recomputed by the example, and the printed table's
        assert report["n"] == rescored["n"] == 100 and report["n_oos"] == rescored["n_oos"] == 100, name
        assert report["set_hit"] == pytest.approx(rescored["set_hit"]) and report["top1"] == pytest.approx(rescored["top1"]), name
        assert printed == {"set_hit": round(100 * report["set_hit"], 2), "top1": round(100 * report["top1"], 2)}, name
        assert 0.5 < report["top1"] <= report["set_hit"] < 1.0, name  # learned routers, 150 agents: far from chance, not perfect
    ours, theirs = clinc["routers"]["centroid"], clinc["routers"]["embedding"]
    # the report says what made it: the class by import path, the options given, the file's digest
    assert ours["source"]["class"] == f"{module}:CentroidRouter" and ours["source"]["options"] == {"min_similarity": 0.15}
    assert len(ours["source"]["source_sha256"]) == 16 and ours["source"]["orchestra"]
    assert theirs["source"]["class"] == "orchestra.routers.basic:EmbeddingRouter" and theirs["source"]["options"] == {}
    assert ours["config"]["min_similarity"] == 0.15 and ours["config"]["trained"]["agents"] == 150
    assert ours["trained_by_bench"] is True and theirs["trained_by_bench"] is False  # embedding has no fit
    assert clinc["python"] == clinc["command"]  # run_agent_bench from Python gives the command's figures
    own = result["own_set"]
    assert set(own) == {"centroid", "embedding"}
    for facts in own.values():
        assert (facts["n"], facts["n_oos"], facts["n_train_rows"]) == (11, 3, 30)
    assert own["embedding"]["set_hit"] >= 0.8 and own["centroid"]["top1"] >= 0.5
    broken = result["broken"]
    expected = {
        "missing_split": "SET/test.jsonl: file not found",
        "unknown_agent": "SET/test.jsonl:3: field 'agents': unknown agent id(s) ['calculater']",
        "duplicate_card": "SET/agents.jsonl:4: field 'id': agent id 'weather' is given twice (first on line 1)",
        "empty_query": "SET/train.jsonl:7: field 'query'",
    }
    for name, start in expected.items():
        facts = broken[name]
        assert facts["error"] == "DataError" and facts["message"].startswith(start), (name, facts["message"])
        assert facts["exit_code"] == 2 and facts["cli"].startswith("DataError:"), (name, facts["cli"])
    assert "must not be blank" in broken["empty_query"]["message"]
    bench = result["routerbench"]
    ours_name = f"{module}:TfidfQualityRouter"
    assert bench["n_test"] == 100 and set(bench["rows"]) == {ours_name, "best-single", "knn"}
    assert all(0.5 < row["aiq"] <= 1.0 for row in bench["rows"].values())
    assert bench["printed_aiq"] == round(bench["rows"][ours_name]["aiq"], 4)  # the command's table, the report's AIQ
    assert bench["sources"][ours_name]["options"] == {"alpha": 1.0} and bench["sources"]["knn"]["options"] == {}
    # which encoder embedded the queries is in the report: knn ran on the hashing embedder, ours embeds nothing
    assert bench["embedders"] == {ours_name: None, "best-single": None, "knn": "hashing-256"}


def check_onboard_while_serving(result: dict[str, Any]) -> None:
    assert result["team"] == ["units", "wordcount", "report"]
    # onboarded by the CLI while a run was under way: that run kept its decision's registry, the next one saw the card
    assert result["before"]["out_of_scope"] is True and result["onboarded"]["exit_code"] == 0
    assert (result["after"]["answer"], result["after"]["agents"]) == ("artsehcro", ["reverse"]) and result["held_still_running"]
    held, after = result["decisions"]["held"], result["decisions"]["after"]
    assert "reverse" not in held["agents"] and "reverse" in after["agents"] and after["version"] == held["version"] + 1
    assert result["held"]["answer"].startswith("Q3 sales report") and result["held"]["status"] == 200
    # its card updated: routed by the new description at once, and listed by the server as stored
    assert result["mirror_before"]["out_of_scope"] is True and result["updated"]["exit_code"] == 0
    assert (result["mirror_after"]["answer"], result["mirror_after"]["agents"]) == ("desserts", ["reverse"])
    assert result["listed_after_update"].startswith("Spells a word or text backwards, and mirrors")
    # removed between the decision and the call: not called; the report answered
    assert result["removed"]["exit_code"] == 0 and result["removed_decision"]["calls"] == ["report", "reverse"]
    removed = result["removed_mid_run"]
    assert removed["status"] == 200 and removed["agents"] == ["report"] and removed["failed"] == {"reverse": "UnknownAgentError"}
    assert result["after_removal"]["out_of_scope"] is True
    # two processes onboarding one id at once: one stored, the other refused naming the id; the server uses the winner
    codes = sorted(out["exit_code"] for out in result["race"].values())
    assert codes == [0, 2] and any("DuplicateIdError: agent id 'reverse' is already registered" in out["stderr"] for out in result["race"].values())
    winner = next(who for who, out in result["race"].items() if out["exit_code"] == 0)
    assert result["race_listed"] == f"Spells text backwards ({winner}'s card)." and result["race_answer"]["answer"] == "artsehcro"
    # bad card files: exit 2, a CardError naming the field or the id, nothing stored
    refused = result["refused"]
    assert all(out["exit_code"] == 2 and out["stderr"].startswith("CardError: ") for out in refused.values())
    assert "field 'description'" in refused["empty_description"]["stderr"] and "holds id 'twice' twice" in refused["duplicate_id"]["stderr"]
    assert "field 'backend'" in refused["bad_backend"]["stderr"]
    assert result["agents_listed"] == ["report", "reverse", "units", "wordcount"]
    assert result["model_added"]["exit_code"] == 0 and result["models_listed"] == ["smollm2-q4"]
    # the Python API: every run the server made, the registry's history, an exact replay on the registry of then
    assert len(result["runs"]) == 8 and {pid for _, pid in result["runs"]} == {result["server_pid"]}
    assert [line.split(" ", 2)[2] for line in result["history"]] == [
        "agent units added", "agent wordcount added", "agent report added", "agent reverse added", "agent reverse updated",
        "agent reverse removed", "agent reverse added", "model smollm2-q4 added"]
    assert result["replay"] == {"status": "ok", "answer": "artsehcro", "agents": ["reverse"], "mode": "exact"}
    # SIGTERM with a run under way: stopped after the grace period, stored as interrupted, its client told; resumed
    assert (result["stopped"]["status"], result["stopped"]["error"]) == (503, "server_shutdown")
    assert result["exit_code"] == 128 + 15 and result["interrupted"] == {"status": "interrupted", "error": "RunCancelled"}
    assert result["resumed"] == {"status": "ok", "answer": "Q3 sales report: 1,284 orders, 96,310.00 EUR"}
    assert result["running_left"] == 0


EXPECTATIONS: dict[str, Callable[[Any], None]] = {
    "benchmark_your_own_router": check_benchmark_your_own_router,
    "budgets_and_fallbacks": check_budgets_and_fallbacks,
    "conversation": check_conversation,
    "custom_agent_and_aggregator": check_custom_agent_and_aggregator,
    "custom_router": check_custom_router,
    "durable_runs": check_durable_runs,
    "evaluate_a_router_on_past_runs": check_evaluate_a_router_on_past_runs,
    "fused_answers": check_fused_answers,
    "inside_a_langgraph_graph": check_inside_a_langgraph_graph,
    "model_routing": check_model_routing,
    "onboard_and_replay": check_onboard_and_replay,
    "onboard_while_serving": check_onboard_while_serving,
    "openai_client": check_openai_client,
    "router_r1_loop": check_router_r1_loop,
    "tcar_on_a_local_model": check_tcar_on_a_local_model,
    "train_router_on_data": check_train_router_on_data,
}
NEEDS_DATA = {
    "benchmark_your_own_router": Path(__file__).resolve().parents[2] / "shared" / "data" / "agents" / "clinc150",
    "fused_answers": Path(__file__).resolve().parents[2] / "shared" / "data" / "models" / "routerbench",
    "model_routing": Path(__file__).resolve().parents[2] / "shared" / "data" / "models" / "routerbench",
    "router_r1_loop": Path(__file__).resolve().parents[2] / "shared" / "data" / "models" / "routerbench",
    "train_router_on_data": Path(__file__).resolve().parents[2] / "shared" / "data" / "agents" / "clinc150",
}
"""Examples that read ../shared/data (the routing data beside the repository) and the set folder each reads."""


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_and_behaves(path: Path) -> None:
    assert path.stem in EXPECTATIONS, f"add what {path.name} must do to EXPECTATIONS"
    if path.stem in NEEDS_DATA and not NEEDS_DATA[path.stem].is_dir():
        pytest.skip(f"{NEEDS_DATA[path.stem]} is not beside the repository")
    namespace = runpy.run_path(str(path), run_name="example")
    EXPECTATIONS[path.stem](namespace["main"]())


def test_onboard_while_serving_on_postgresql() -> None:
    """The same deployment on PostgreSQL (a schema of the example's own in ORCHESTRA_TEST_PG_URL's database)."""
    import os

    url = os.environ.get("ORCHESTRA_TEST_PG_URL")
    if not url:
        pytest.skip("ORCHESTRA_TEST_PG_URL is not set")
    namespace = runpy.run_path(str(Path(__file__).parents[1] / "examples" / "onboard_while_serving.py"), run_name="example")
    check_onboard_while_serving(namespace["main"](url))
