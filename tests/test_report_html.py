"""`lvspec-report html`: the page's content, checked as text, and rendered in a real headless
Chromium (Debian's chromium + chromedriver, driven by selenium): it renders, a screenshot is
taken, and a hand-made record's tokens show the colours of their provenance.

`make test` installs Chromium first when it is missing and it runs as root
(scripts/ensure_chromium.sh); without it the browser tests fail with that advice."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lvspec_eval.metrics.records import token_pieces
from lvspec_eval.report.html import PROVENANCE, differing, display

sys.path.insert(0, str(Path(__file__).parent))
from test_report import LVSPEC_PARAMS, ar_record, paired, spec_record, write_jsonl  # noqa: E402

CHROMIUM = Path(os.environ.get("LVSPEC_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("LVSPEC_CHROMEDRIVER", "/usr/bin/chromedriver"))
# The flags known to work on these machines (no sandbox as root, no background network).
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000")

# The hand-made sample: every provenance code, text that must be escaped, one loose token that
# makes the answer differ from ar, and one token ending mid-character ('' piece).
TOKENS = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
CODES = "PELSCTEEBE"
TEXTS = ["<b>", " bold", " &amp;", " x", "\n", " y", " \u00e9", "", "\u00e8", "!"]
AR_TOKENS = [10, 11, 99, 13, 14, 15, 16, 17, 18, 19]
AR_TEXTS = ["<b>", " bold", " Z", " x", "\n", " y", " \u00e9", "", "\u00e8", "!"]


# The legend of docs/report.md, written out so that a page colouring a code wrongly fails.
EXPECTED_RGB = {
    "P": "rgb(206, 212, 218)",  # prefill #ced4da
    "T": "rgb(233, 236, 239)",  # target step #e9ecef
    "E": "rgb(178, 242, 187)",  # exact #b2f2bb
    "L": "rgb(255, 212, 59)",  # loose #ffd43b
    "S": "rgb(208, 191, 255)",  # shift #d0bfff
    "C": "rgb(255, 168, 168)",  # correction #ffa8a8
    "B": "rgb(116, 192, 252)",  # bonus #74c0fc
}


@pytest.fixture
def html_runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    write_jsonl(root / "ar.jsonl", [ar_record(0, AR_TOKENS, "".join(AR_TEXTS), 0.5, 4.0),
                                    ar_record(1, [1, 2, 3], "a b c", 0.5, 2.0)])
    sample = spec_record("lvspec", 0, LVSPEC_PARAMS, TOKENS, "".join(TEXTS), 3, (4, 1, 1), [2, 2, 1, 1], 0.5, 1.0,
                         proposed=8, **paired(4.0, 4.5, False, 0.9, ar_tokens=AR_TOKENS, ar_text="".join(AR_TEXTS)))
    sample.update(provenance=CODES, token_texts=TEXTS, ar_token_texts=AR_TEXTS)
    same = spec_record("lvspec", 1, LVSPEC_PARAMS, [1, 2, 3], "a b c", 1, (1, 0, 0), [1, 0, 0, 0], 0.5, 1.0,
                       proposed=4, **paired(2.0, 2.5, True, 1.0, ar_tokens=[1, 2, 3], ar_text="a b c"))
    same.update(provenance="PEB", token_texts=["a", " b", " c"], ar_token_texts=["a", " b", " c"])
    write_jsonl(root / "lvspec.jsonl", [sample, same])
    # sd without token_texts nor paired_baseline: paired with the ar run, ids shown (no tokenizer)
    write_jsonl(root / "sd.jsonl", [
        spec_record("sd", 1, {"num_draft_tokens": 2}, [1, 2, 4], "a b x", 1, (1, 0, 0), [1, 0], 0.5, 1.0, proposed=2,
                    provenance="PEC"),
    ])
    return root


@pytest.fixture
def page(html_runs, tmp_path) -> Path:
    out = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "lvspec_eval.report.cli", "html", str(html_runs), "-o", str(out),
                           "--bootstrap", "50", "--title", "tiny <report>"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


def test_token_pieces_join_to_the_decode():
    vocab = {1: b"a", 2: b" b", 3: "\u00e9".encode()[:1], 4: "\u00e9".encode()[1:], 5: b"!", 6: "\u20ac".encode()[:2]}

    def decode(ids):
        return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")

    assert token_pieces(decode, [1, 2, 3, 4, 5]) == ["a", " b", "", "\u00e9", "!"]
    assert token_pieces(decode, [1, 3]) == ["a", "\ufffd"]  # an incomplete last character stays visible
    assert "".join(token_pieces(decode, [1, 6, 2])) == decode([1, 6, 2])
    assert token_pieces(decode, []) == []


def test_display_marks_newlines_and_empty_pieces():
    assert display("a\nb") == "a\u21b5\nb" and display("") == "\u2009" and display(" x") == " x"


def test_differing_marks_tokens_outside_matching_blocks():
    mine, theirs = differing(TOKENS, AR_TOKENS)
    assert [i for i, d in enumerate(mine) if d] == [2] and [i for i, d in enumerate(theirs) if d] == [2]
    mine, theirs = differing([1, 2, 3], [1, 2])
    assert mine == [False, False, True] and theirs == [False, False]


def test_html_is_self_contained_and_escaped(page):
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "the page must not fetch anything"
    assert "@import" not in html and "url(http" not in html
    assert "<title>tiny &lt;report&gt;</title>" in html
    assert "&lt;b&gt;" in html and " &amp;amp;" in html
    assert "<b>" not in html.split("<body>")[1]  # the token "<b>" is text, never markup
    assert html.count("data:image/svg+xml;base64,") == 4  # pareto, tau hist, acceptance by position, tau vs length
    assert html.count('<details class="sample') == 3  # lvspec docs 0 and 1, sd doc 1; ar rows have no view
    assert "&lt;1&gt;&lt;2&gt;&lt;4&gt;" in re.sub(r"<[^>]+>", "", html)  # sd: ids without token_texts
    assert "records lack token_texts" in html
    assert set(PROVENANCE) == set(EXPECTED_RGB) == set(CODES)  # the hand-made sample has every code
    for code, (name, _, _) in PROVENANCE.items():
        assert f'<span class="t t{code}"' in html and f"{code} {name}</span>" in html  # the legend


def test_html_decodes_with_a_tokenizer(html_runs, tmp_path):
    from testbed.fixtures.tokenizer import qwen_tokenizer

    tok_dir = tmp_path / "tok"
    qwen_tokenizer().save_pretrained(tok_dir)
    ids = qwen_tokenizer()("Hello world", add_special_tokens=False)["input_ids"]
    write_jsonl(html_runs / "sd.jsonl", [
        spec_record("sd", 1, {"num_draft_tokens": 2}, ids, "Hello world", 1, (1, 0, 0), [1, 0], 0.5, 1.0,
                    proposed=2, provenance="PE"),
    ])
    out = tmp_path / "r.html"
    from lvspec_eval.report.cli import main

    assert main(["html", str(html_runs), "-o", str(out), "--bootstrap", "0", "--tokenizer", str(tok_dir)]) == 0
    text = out.read_text(encoding="utf-8")
    assert ">Hello</span>" in text and "> world</span>" in text
    assert main(["html", str(html_runs), "-o", str(out), "--tokenizer", str(tmp_path)]) == 2  # no tokenizer.json


def test_html_needs_an_output(html_runs, capsys):
    from lvspec_eval.report.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["html", str(html_runs)])
    assert exc.value.code == 2 and "--output" in capsys.readouterr().err


# -- the real browser ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: the browser test needs Debian's chromium and chromium-driver. "
                    "Install them with `sudo apt-get install -y chromium chromium-driver` (`make test` runs "
                    "scripts/ensure_chromium.sh, which does it when run as root)", pytrace=False)
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    yield driver
    driver.quit()


TOKEN_STYLE = """
return Array.from(document.querySelectorAll(arguments[0])).map(function (e) {
  return [e.dataset.code, getComputedStyle(e).backgroundColor, e.textContent, e.classList.contains('d'),
          getComputedStyle(e).outlineColor, getComputedStyle(e).outlineStyle];
});
"""


def test_page_renders_in_chromium_with_provenance_colours(browser, page, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(page.as_uri())
    assert browser.title == "tiny <report>"
    assert browser.find_element(By.ID, "f-count").text == "3 of 3 samples shown"  # the inline script ran
    assert browser.execute_script(
        "return performance.getEntriesByType('resource').filter(e => !e.name.startsWith('data:')).length") == 0
    widths = browser.execute_script("return Array.from(document.querySelectorAll('figure img')).map(i => i.naturalWidth)")
    assert len(widths) == 4 and all(w > 100 for w in widths), widths  # the SVG figures decoded

    # 1. The hand-made sample: one span per token, colour and diff mark as its provenance says.
    first = 'details.sample[data-method="lvspec"]'  # doc 0 comes first
    sample = browser.find_element(By.CSS_SELECTOR, first)
    sample.find_element(By.TAG_NAME, "summary").click()
    spans = browser.execute_script(TOKEN_STYLE, first + ' .side.method span.t')
    spans = spans[:len(TOKENS)]
    assert [s[0] for s in spans] == list(CODES)
    assert [s[1] for s in spans] == [EXPECTED_RGB[c] for c in CODES]
    assert [s[2] for s in spans] == [display(t) for t in TEXTS]  # escaped text shows as typed
    assert [s[3] for s in spans] == [i == 2 for i in range(len(TOKENS))]  # only the loose token differs
    assert spans[2][5] == "solid" and spans[2][4] == "rgb(224, 49, 49)" and spans[0][5] == "none"
    ar_spans = browser.execute_script(TOKEN_STYLE, first + ' .side.ar span.t')[:len(AR_TOKENS)]
    assert [s[2] for s in ar_spans] == [display(t) for t in AR_TEXTS] and [s[3] for s in ar_spans][2] is True

    # 2. The pixels: the loose token's screenshot is mostly its background colour.
    loose = sample.find_elements(By.CSS_SELECTOR, ".side.method span.tL")[0]
    shot = tmp_path / "loose.png"
    shot.write_bytes(loose.screenshot_as_png)
    pixels = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 16)
    top = max(pixels)[1]
    assert "rgb(%d, %d, %d)" % top == EXPECTED_RGB["L"], sorted(pixels)[-5:]

    # 3. Filters: by run and by "differs from ar".
    sd_run = browser.find_element(By.CSS_SELECTOR, 'details.sample[data-method="sd"]').get_attribute("data-run")
    Select(browser.find_element(By.ID, "f-run")).select_by_value(sd_run)
    assert browser.find_element(By.ID, "f-count").text == "1 of 3 samples shown"
    Select(browser.find_element(By.ID, "f-run")).select_by_value("")
    browser.find_element(By.ID, "f-diff").click()
    assert browser.find_element(By.ID, "f-count").text == "2 of 3 samples shown"  # lvspec doc 0, sd doc 1
    browser.find_element(By.ID, "f-diff").click()

    # 4. A screenshot of the whole page, kept next to the page (REPORT_SCREENSHOT_DIR keeps a copy).
    browser.execute_script("document.getElementById('samples').scrollIntoView()")
    shot = page.with_suffix(".png")
    assert browser.save_screenshot(str(shot))
    image = Image.open(shot)
    assert shot.stat().st_size > 20_000 and image.size[0] >= 1000 and len(image.getcolors(1 << 20)) > 50
    keep = os.environ.get("REPORT_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / "report.png").write_bytes(shot.read_bytes())
        (Path(keep) / "report.html").write_bytes(page.read_bytes())
