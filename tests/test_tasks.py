"""Task sets with verifiable answers: extraction, normalisation, checking and loading."""

from __future__ import annotations

import json
import re
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nex_causal.errors import NexError
from nex_causal.models.tasks import (
    ANSWER_INSTRUCTION,
    Problem,
    check_answer,
    extract_answer,
    final_answer,
    format_number,
    gold_answer,
    load_jsonl,
    load_tasks,
    normalize_answer,
    parse_number,
)


@pytest.mark.parametrize("response, answer", [
    ("So the answer is 42.", "42."),
    ("work...\nAnswer: $1,000", "$1,000"),
    ("**Answer:** 12 apples\nHope that helps!", "12 apples"),
    ("x = \\boxed{5} is wrong. Answer: 6", "6"),  # the later form wins
    ("Answer: 5, no wait. \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),  # nested braces
    ("Final Answer: The final answer is $\\boxed{3}$. I hope it is correct.", "3"),
    ("Answer:\n1 2\n3 4", "1 2\n3 4"),  # multi-line answer after an empty marker line
    ("<answer> 7 </answer>", "7"),
    ("Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18", "18"),
    ("I answered 5 questions", None),
    ("no final answer here", None),
    ("Answer:", None),
    ("\\boxed{unclosed", None),
])
def test_final_answer_finds_the_last_answer_form(response, answer):
    assert final_answer(response) == answer


@pytest.mark.parametrize("raw, canonical", [
    ("1,234", "1234"),
    ("$1,234.50", "1234.5"),
    ("\\$18.90", "18.9"),
    ("-$5", "-5"),
    ("\u22123", "-3"),  # Unicode minus
    ("12.0", "12"),
    ("12.", "12"),
    ("+5", "5"),
    (".5", "0.5"),
    ("1/2", "0.5"),
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac{-3}{4}", "-0.75"),
    ("-\\frac{3}{4}", "-0.75"),
    ("\\boxed{\\frac{1}{3}}", "1/3"),
    ("2/6", "1/3"),
    ("0.3333", "0.3333"),
    ("5 apples", "5"),
    ("$5 per hour", "5"),
    ("5 km/h", "5"),
    ("50%", "50"),
    ("50\\%", "50"),
    ("90^\\circ", "90"),
    ("x = 7", "7"),
    ("5\\text{ cm}", "5"),
    ("1/0", "1/0"),  # not a number: kept as text
    ("1,23", "1,23"),  # not a thousands separator
    ("3 + 4", "3+4"),  # an expression is not its value
    ("3x+4", "3x+4"),
    ("(1, 2)", "(1,2)"),
    ("2 \\pi", "2\\pi"),
    ("\\text{Yes}", "yes"),
    ("New   York", "new york"),
])
def test_normalize_answer_table(raw, canonical):
    assert normalize_answer(raw) == canonical
    assert normalize_answer(canonical) == canonical  # idempotent


@pytest.mark.parametrize("a, b, equal", [
    ("1/2", "0.5", True),
    ("\\frac{1}{2}", "0.50", True),
    ("-3", "\u22123", True),
    ("12.0", "12", True),
    ("1,000", "1000", True),
    ("$7", "7 dollars", True),
    ("1/3", "0.3333", False),
    ("12", "13", False),
    ("3 + 4", "7", False),
    ("-0.5", "0.5", False),
])
def test_answers_compare_by_value(a, b, equal):
    assert (normalize_answer(a) == normalize_answer(b)) is equal


@given(st.fractions(max_denominator=10**6))
def test_canonical_numbers_round_trip(value):
    assert parse_number(format_number(value)) == value
    assert normalize_answer(format_number(value)) == format_number(value)


def test_finite_decimals_print_as_decimals():
    assert format_number(Fraction(-1, 8)) == "-0.125"
    assert format_number(Fraction(3, 1024)) == "0.0029296875"
    assert format_number(Fraction(7, 12)) == "7/12"


def test_check_answer_compares_normalised_answers():
    problem = Problem("p", "q", "1,250")
    assert check_answer(problem, "The total is 1000 + 250.\nAnswer: $1250.00")
    assert not check_answer(problem, "Answer: 1205")
    assert not check_answer(problem, "The total is 1250")  # no final answer given
    assert extract_answer("Answer: 1/4") == "0.25"
    assert extract_answer("nothing") is None


@pytest.mark.parametrize("solution, gold", [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72"),
    ("So it is $\\boxed{\\frac{14}{3}}$.", "\\frac{14}{3}"),
    (42, "42"),
    ("  yes ", "yes"),
])
def test_gold_answer_formats(solution, gold):
    assert gold_answer(solution) == gold


def write_lines(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_jsonl_loader_reads_gsm8k_and_math_records(tmp_path):
    path = write_lines(tmp_path / "mix.jsonl", [
        {"question": "Natalia sold 48 clips. How many?", "answer": "48 + 24 = 72\n#### 72"},
        "",
        {"problem": "Compute 14/3.", "solution": "It is $\\boxed{\\frac{14}{3}}$.", "level": "Level 2",
         "id": "math-1"},
        {"prompt": "What is 2+2?", "answer": 4},
    ])
    tasks = load_jsonl(path)
    assert tasks.name == "mix" and len(tasks) == 3
    assert [p.id for p in tasks.problems] == ["mix-1", "math-1", "mix-4"]
    assert [p.target for p in tasks.problems] == ["72", "\\frac{14}{3}", "4"]
    assert tasks.problems[1].meta == {"level": "Level 2"}
    assert tasks.problems[0].prompt == f"Natalia sold 48 clips. How many?\n\n{ANSWER_INSTRUCTION}"
    assert tasks.check(tasks.problems[1], "14 divided by 3.\nAnswer: 14/3")
    assert not tasks.check(tasks.problems[1], "Answer: 4.67")
    assert tasks.check(tasks.problems[2], "\\boxed{4}")
    assert load_tasks(str(path)).prompts() == tasks.prompts()


@pytest.mark.parametrize("bad_line, message", [
    ('{"question": "a", "answer": 1', "line 2: not valid JSON"),
    ('["question", "answer"]', "line 2: expected a JSON object"),
    ('{"question": "a"}', "line 2: needs a text field"),
    ('{"question": "a", "answer": [1, 2]}', "line 2: answer must be a string or a number"),
    ('{"question": "a", "answer": ""}', "line 2: the 'answer' field holds no answer"),
    ('{"id": "x", "question": "a", "answer": "1"}', "line 2: duplicate id 'x'"),
])
def test_jsonl_loader_names_the_bad_line(tmp_path, bad_line, message):
    path = write_lines(tmp_path / "bad.jsonl", ['{"id": "x", "question": "q", "answer": "#### 1"}', bad_line])
    with pytest.raises(NexError, match=message):
        load_jsonl(path)


def test_jsonl_loader_rejects_missing_and_empty_files(tmp_path):
    with pytest.raises(NexError, match="does not exist"):
        load_jsonl(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(NexError, match="holds no problems"):
        load_tasks(str(tmp_path / "empty.jsonl"))


def test_reasoning_gym_tasks_are_seeded_and_scored_by_reasoning_gym():
    tasks = load_tasks("rg:basic_arithmetic:6", seed=3)
    assert tasks.name == "rg:basic_arithmetic" and len(tasks) == 6
    assert load_tasks("rg:basic_arithmetic:6", seed=3).prompts() == tasks.prompts()
    assert load_tasks("rg:basic_arithmetic:6", seed=4).prompts() != tasks.prompts()
    for problem in tasks.problems:
        assert problem.prompt.endswith(ANSWER_INSTRUCTION)
        assert tasks.check(problem, f"Let me compute.\nAnswer: {problem.target}")
        assert tasks.check(problem, f"<answer>{problem.target}</answer>")
        assert not tasks.check(problem, f"Answer: {int(problem.target) + 1}")
        assert not tasks.check(problem, problem.target)  # no final answer given
        assert tasks.extract(f"Answer: {problem.target}") == problem.target


def test_reasoning_gym_dataset_options_reach_its_config():
    tasks = load_tasks("rg:chain_sum:20:min_terms=2,max_terms=2,min_digits=1,max_digits=1", seed=0)
    for problem in tasks.problems:  # two one-digit terms: "a + b" or "a - b", |answer| <= 18
        terms = [t for t in re.findall(r"\d+", problem.prompt.split("\n")[0])]
        assert len(terms) == 2 and all(len(t) == 1 for t in terms) and abs(int(problem.target)) <= 18
    assert load_tasks("rg:chain_sum:20", seed=0).prompts() != tasks.prompts()
    with pytest.raises(NexError, match="does not take the options 'nope=1'"):
        load_tasks("rg:chain_sum:2:nope=1")
    with pytest.raises(NexError, match="key=value"):
        load_tasks("rg:chain_sum:2:min_terms")


def test_reasoning_gym_multiline_answers():
    tasks = load_tasks("rg:mini_sudoku:2", seed=0)
    problem = tasks.problems[0]
    assert "\n" in problem.target
    assert tasks.check(problem, f"Filling the grid row by row.\nAnswer:\n{problem.target}")


def test_organism_specs_delegate_to_the_zoo():
    from nex_causal.zoo.task import organism_tasks

    tasks = load_tasks("organism-search:4", seed=2)
    assert tasks.prompts() == organism_tasks(4, seed=2, skill="search").prompts()
    assert load_tasks("organism:3").name == "trek"  # the default organism's task


@pytest.mark.parametrize("spec, message", [
    ("bogus", "unknown task spec"),
    ("rg:basic_arithmetic", "unknown task spec"),
    ("organism:-1", "unknown task spec"),
    ("rg:no_such_dataset:5", "unknown reasoning-gym dataset"),
    ("rg:basic_arithmetic:0", "gives no problems"),
])
def test_bad_specs_raise(spec, message):
    with pytest.raises(NexError, match=message):
        load_tasks(spec)
