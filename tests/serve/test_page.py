"""The review page at ``/`` in a real headless Chromium against a real ``trd serve`` process.

A person's path through the page: upload a scan pair, wait for its heatmaps, read the score (the
same as the API's for that pair), slide the threshold explorer (the bound it shows is k/(n+1) of
the model's validation scores, as in trd.scoring.threshold), see a defective scan's regions outlined
with their sizes and a colour bar under every heatmap, type a threshold and write a new model file
with it, open the result again from the recent list, see a bad upload's one-line error; readable at
390 px without sideways scrolling, and no request leaving the server's origin. Skipped only where
selenium, chromium or chromedriver is missing.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from .browser import images_loaded, missing, overflow, set_viewport, start_chrome

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

WAIT_S = 120


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.fixture(scope="module")
def page(served: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium on the page after uploading ``served.pair(0)`` and waiting for its images."""
    driver = start_chrome(tmp_path_factory.mktemp("chromium-profile"))
    try:
        set_viewport(driver, 1280, 900)
        driver.get(served.url + "/")
        _wait(driver, lambda d: d.find_element("id", "explorer-body").get_attribute("hidden") is None
              or d.find_element("id", "error").is_displayed())
        _upload(driver, *served.pair(0))
        _wait(driver, lambda d: images_loaded(d, "#images img") or d.find_element("id", "error").is_displayed())
        assert not driver.find_element("id", "error").is_displayed(), driver.find_element("id", "error").text
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(condition)


def _text(driver: Any, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def _value(driver: Any, element_id: str) -> str:
    return driver.find_element("id", element_id).get_attribute("data-value")


def _api_score(served: Any, rgb: Path, xyz: Path) -> Any:
    import httpx

    files = {"rgb": (rgb.name, rgb.read_bytes()), "xyz": (xyz.name, xyz.read_bytes())}
    headers = {"Authorization": f"Bearer {served.token}"} if served.token else {}
    return httpx.post(served.url + "/v1/score", files=files, headers=headers, timeout=WAIT_S)


def _upload(driver: Any, rgb: Path, xyz: Path) -> None:
    driver.find_element("id", "rgb-file").send_keys(str(rgb))
    driver.find_element("id", "xyz-file").send_keys(str(xyz))
    driver.find_element("id", "score-button").click()


def test_upload_shows_the_apis_score_images_and_heatmaps(page: Any, served: Any) -> None:
    import httpx

    rgb, xyz = served.pair(0)  # uploaded by the fixture
    branches = httpx.get(served.url + "/v1/model", timeout=WAIT_S).json()["branches"]
    expected = {"image-rgb", "image-3d", "heatmap-fused", *(f"heatmap-{b}" for b in branches)}
    assert set(images_loaded(page, "#images img") or []) == expected
    tops = page.execute_script("return [...document.querySelectorAll('#images img')]"
                               ".map(i => Math.round(i.getBoundingClientRect().top))")
    assert len(set(tops)) == 1, "images side by side in a 1280 px window"
    api = _api_score(served, rgb, xyz)
    assert api.status_code == 200, api.text[:500]
    record = api.json()
    assert float(_value(page, "score")) == pytest.approx(record["score"], rel=1e-6, abs=1e-9)
    assert _text(page, "score") == f"{record['score']:.4f}"
    assert _text(page, "decision") == ("anomalous" if record["anomalous"] else "good")
    assert float(_value(page, "image-threshold")) == record["threshold"]["image"]
    assert _text(page, "statement") == record["threshold"]["statement"]
    assert _text(page, "result-name") == record["name"] == rgb.stem
    for branch in branches:
        assert branch in page.find_element("id", f"heatmap-{branch}").find_element("xpath", "ancestor::figure").text
    # Every image says what it shows; every input has a label.
    assert page.execute_script("return [...document.images].every(i => i.alt.trim().length > 0)")
    assert page.execute_script("return [...document.querySelectorAll('input')].every(i => i.labels.length > 0)")


def test_threshold_explorer_shows_the_order_statistic_bound(page: Any, served: Any) -> None:
    import httpx
    from selenium.webdriver.common.keys import Keys

    model = httpx.get(served.url + "/v1/model", timeout=WAIT_S).json()
    scores = model["validation_scores"]
    assert scores is not None and len(set(scores)) >= 2, "the served model needs >= 2 distinct validation scores"
    n = len(scores)

    def shown() -> tuple[float, float, int]:
        """(threshold, bound, k) on the page, with the bound checked against k/(n+1)."""
        t = float(_value(page, "threshold-value"))
        # The slider's positions are the validation scores; at the model's own position the page
        # shows the model's exact threshold (the stored scores are rounded to 6 digits).
        at = min(scores, key=lambda s: abs(s - t))
        assert at == pytest.approx(t, rel=1e-5)
        k = 1 + sum(s > at for s in scores)  # t is the k-th largest: P(new good score > t) <= k/(n+1)
        bound = float(_value(page, "fpr-bound"))
        assert bound == pytest.approx(k / (n + 1), rel=1e-12)
        assert f"{k}/{n + 1}" in _text(page, "fpr-bound") and f"of n = {n}" in _text(page, "threshold-rank")
        return t, bound, k

    # It opens at the model's own threshold, whose promise the page reproduces.
    t0, bound0, _ = shown()
    assert t0 == model["thresholds"]["image"]
    assert bound0 == pytest.approx(model["thresholds"]["guaranteed_fpr"], rel=1e-12)
    assert "(shown now)" in _text(page, "threshold-model")
    slider = page.find_element("id", "threshold")
    slider.send_keys(Keys.HOME)  # keyboard: the lowest validation score, k = n when there are no ties
    t_low, bound_low, k_low = shown()
    assert t_low == pytest.approx(min(scores), rel=1e-5) and k_low == n + 1 - scores.count(min(scores))
    slider.send_keys(Keys.END)  # the highest: k = 1, the smallest bound n samples can give
    t_high, bound_high, k_high = shown()
    assert t_high == pytest.approx(max(scores), rel=1e-5) and k_high == 1 and bound_high < bound_low
    slider.send_keys(Keys.ARROW_LEFT)
    assert shown()[1] > bound_high
    # Where the current sample falls, and its decision at the chosen threshold (strictly above).
    score = float(_value(page, "score"))
    t, _, _ = shown()
    assert _text(page, "explorer-decision") == ("anomalous" if score > t else "good")
    assert f"above {sum(s < score for s in scores)} of the {n} validation scores" in _text(page, "threshold-sample")


def test_regions_outlines_colour_bars_and_a_typed_threshold_written_to_a_new_file(page: Any, served: Any) -> None:
    """Issue 20 (c): a defective pair's outline, colour bars and region list; a typed threshold beyond
    the validation scores applied as a NEW model file whose statement the page shows."""
    import httpx

    from trd.data.identity import files_sha256
    from trd.runtime.ort import open_onnx

    records = {i: _api_score(served, *served.pair(i)).json() for i in range(2, 8)}  # the defective pairs
    i, record = max(records.items(), key=lambda item: (len(item[1]["regions"]), item[1]["score"]))
    assert record["regions"], "the tiny model flags no region on any defective pair"
    _upload(page, *served.pair(i))
    _wait(page, lambda d: _text(d, "result-name") == record["name"] and images_loaded(d, "#images img"))
    # every image carries the outline of every region, in the image's own pixel coordinates
    size = record["image_px"]
    for name in ("image-rgb", "heatmap-fused", "heatmap-rgb", "heatmap-geo"):
        svg = page.find_element("id", f"outline-{name}")
        assert svg.get_dom_attribute("viewBox") == f"0 0 {size['width']} {size['height']}"
        drawn = {int(p.get_dom_attribute("data-region")) for p in svg.find_elements("css selector", "polygon")}
        assert drawn == set(range(1, len(record["regions"]) + 1))
    # a colour bar under every heatmap, its scale covering the score, the pixel threshold marked on it
    bars = page.find_elements("css selector", "#images .colour-bar")
    assert {b.get_attribute("id") for b in bars} == {"colour-bar-heatmap-fused", "colour-bar-heatmap-rgb",
                                                      "colour-bar-heatmap-geo"}
    for bar in bars:
        assert float(bar.get_attribute("data-vmax")) == record["heatmap_range"]["vmax"] >= record["score"]
        mark = bar.find_element("css selector", ".pixel-threshold")
        assert float(mark.get_attribute("data-value")) == record["threshold"]["pixel"]
    # the region list: one line per region with its size from the record
    items = page.find_elements("css selector", "#region-list li")
    assert len(items) == len(record["regions"])
    for item, region in zip(items, record["regions"], strict=True):
        assert float(item.get_attribute("data-area")) == region["area_mm2"]
        shown = float(format(region["area_mm2"], ".3g"))  # 3 significant digits, as the page prints
        assert f"{shown:g} mm²" in item.text
    assert _text(page, "decided-by") == f"Why: {record['decided_by']}."
    # a typed threshold above every validation score: k = 1, then written to a new model file
    model = httpx.get(served.url + "/v1/model", timeout=WAIT_S).json()
    typed = max(model["validation_scores"]) + 1.25
    field = page.find_element("id", "threshold-typed")
    field.clear()
    field.send_keys(repr(typed))
    _wait(page, lambda d: _value(d, "threshold-value") == repr(typed))
    assert int(_value(page, "threshold-rank")) == 1
    assert float(_value(page, "fpr-bound-90")) == pytest.approx(model["fpr_bound_90_by_rank"][0])
    served_sha = files_sha256(served.onnx)
    before = set(served.models_dir.iterdir())
    page.find_element("id", "apply-threshold").click()
    _wait(page, lambda d: d.find_element("id", "threshold-written").get_attribute("data-file")
          or d.find_element("id", "error").is_displayed())
    assert not page.find_element("id", "error").is_displayed(), _text(page, "error")
    written = set(served.models_dir.iterdir()) - before
    assert [f.name for f in written] == [page.find_element("id", "threshold-written").get_attribute("data-file")]
    new = open_onnx(written.pop()).thresholds  # a real ONNX file, read by onnxruntime
    assert new.image == typed and new.rank == 1 and "set by hand" in new.source
    assert _text(page, "written-statement") == new.image_statement()
    assert files_sha256(served.onnx) == served_sha  # the served model is never changed
    assert httpx.get(served.url + "/v1/model", timeout=WAIT_S).json()["thresholds"] == model["thresholds"]


def test_recent_result_opens_again(page: Any, served: Any) -> None:
    import httpx

    newest = httpx.get(served.url + "/v1/recent", timeout=WAIT_S).json()["results"][0]
    page.find_element("id", "recent-refresh").click()
    _wait(page, lambda d: d.find_elements("css selector", f'#recent-list button[data-id="{newest["id"]}"]'))
    page.execute_script("document.getElementById('images').replaceChildren(); "
                        "document.getElementById('score').removeAttribute('data-value');")
    page.find_element("css selector", f'#recent-list button[data-id="{newest["id"]}"]').click()
    _wait(page, lambda d: images_loaded(d, "#images img"))
    assert float(_value(page, "score")) == pytest.approx(newest["score"], rel=1e-6, abs=1e-9)


def test_dropped_files_are_told_apart_and_scored(page: Any, served: Any) -> None:
    rgb, xyz = served.pair(1)
    page.execute_script("document.getElementById('images').replaceChildren(); "
                        "document.getElementById('score').removeAttribute('data-value');")
    # A drop of the 3D file first, then the RGB image, as a person would drag them from a file manager.
    page.execute_script(
        "const transfer = new DataTransfer();"
        "for (const [name, b64] of arguments[0]) {"
        "  transfer.items.add(new File([Uint8Array.from(atob(b64), c => c.charCodeAt(0))], name)); }"
        "document.getElementById('drop-zone').dispatchEvent("
        "  new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));",
        [[f.name, base64.b64encode(f.read_bytes()).decode()] for f in (xyz, rgb)])
    _wait(page, lambda d: _value(d, "score") is not None and images_loaded(d, "#images img"))
    assert page.execute_script("return [document.getElementById('rgb-file').files[0].name, "
                               "document.getElementById('xyz-file').files[0].name]") == [rgb.name, xyz.name]
    api = _api_score(served, rgb, xyz)
    assert api.status_code == 200, api.text[:500]
    assert float(_value(page, "score")) == pytest.approx(api.json()["score"], rel=1e-6, abs=1e-9)


def test_bad_upload_shows_the_apis_one_line_message(page: Any, served: Any, tmp_path: Path) -> None:
    rgb, _ = served.pair(0)
    bad = tmp_path / "scan.tiff"
    bad.write_bytes(b"this is not a TIFF file")
    api = _api_score(served, rgb, bad)
    assert api.status_code == 422, api.text[:500]
    _upload(page, rgb, bad)
    _wait(page, lambda d: d.find_element("id", "error").is_displayed())
    assert _text(page, "error") == api.json()["error"]
    assert "\n" not in _text(page, "error")


def test_page_fits_a_phone_and_stays_on_its_origin(page: Any, served: Any) -> None:
    for width in (390, 1280):
        set_viewport(page, width, 900)
        assert overflow(page) <= 0, width
    # The measurement can fail: a 3000 px element makes the page scroll sideways.
    page.execute_script("const d = document.createElement('div'); d.id = 'wide'; d.style.width = '3000px';"
                        "d.textContent = 'wide'; document.body.append(d);")
    assert overflow(page) > 1000
    page.execute_script("document.getElementById('wide').remove()")
    # Every request the page made went to the server that served it (images are data: URLs).
    origin = _origin(served.url)
    requests = page.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert any(r.endswith("/static/app.js") for r in requests) and any("/v1/score" in r for r in requests)
    assert [r for r in requests if _origin(r) != origin] == []
    sources = page.execute_script("return [...document.querySelectorAll('[src], [href]')].map(e => e.src || e.href)")
    assert [s for s in sources if not s.startswith(("data:", origin))] == []


@pytest.fixture(scope="module")
def older_model(served: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The served model as an older trd exported it: no validation scores in its metadata."""
    import onnx

    from trd.runtime.ort import META_KEYS

    model = onnx.load(served.onnx)
    kept = [p for p in model.metadata_props if p.key != META_KEYS["validation_scores"]]
    assert len(kept) == len(model.metadata_props) - 1
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    path = tmp_path_factory.mktemp("older-model") / "older.onnx"
    onnx.save(model, path)
    return path


def test_token_prompt_and_a_model_without_validation_scores(start_server: Any, older_model: Path,
                                                           tmp_path: Path) -> None:
    import httpx
    from selenium.webdriver.common.keys import Keys

    server = start_server("--token", "s3cret", token="s3cret", model=older_model)
    refused = httpx.get(server.url + "/v1/model", timeout=WAIT_S)
    assert refused.status_code == 401
    driver = start_chrome(tmp_path / "chromium-profile")
    try:
        driver.get(server.url + "/")
        _wait(driver, lambda d: d.find_element("id", "token-form").is_displayed())
        assert _text(driver, "error").startswith(refused.json()["error"])
        driver.find_element("id", "token-input").send_keys("s3cret" + Keys.ENTER)
        _wait(driver, lambda d: _text(d, "model-info").startswith("Model "))
        assert not driver.find_element("id", "token-form").is_displayed()
        assert not driver.find_element("id", "error").is_displayed()
        assert driver.execute_script("return sessionStorage.getItem('trd-token')") == "s3cret"
        # No validation scores: no slider, a note saying why, and the model's own statement.
        assert not driver.find_element("id", "explorer-body").is_displayed()
        note = _text(driver, "explorer-note")
        statement = httpx.get(server.url + "/v1/model", headers=server.headers(), timeout=WAIT_S).json()[
            "thresholds"]["statements"][0]
        assert "no validation scores" in note and statement in note
        # Scoring goes on with the token.
        _upload(driver, *server.pair(2))
        _wait(driver, lambda d: images_loaded(d, "#images img") or d.find_element("id", "error").is_displayed())
        assert not driver.find_element("id", "error").is_displayed(), _text(driver, "error")
    finally:
        driver.quit()
