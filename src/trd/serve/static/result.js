// One result on the page: the decision and why, the images with the defect regions outlined, a
// colour bar under every heatmap (one scale that covers the score, the pixel threshold marked) and
// the list of regions with their size, depth and place.

import { $, fixed, idPart, make, setValue, short, state } from "./common.js";

const BRANCH_ROLES = { rgb: "colour student", geo: "shape (3D) student", fused: "single student" };
const SVG = "http://www.w3.org/2000/svg";

function svgElement(tag, attributes) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, String(value));
  return el;
}

/** The regions' outlines over an image of the record (an SVG in the image's own pixel coordinates,
 * stretched over the picture like the image itself). */
function outlines(record, id) {
  const size = record.image_px;
  const regions = record.regions || [];
  if (!size || regions.length === 0) return null;
  const svg = svgElement("svg", {
    id, class: "outline", viewBox: `0 0 ${size.width} ${size.height}`, preserveAspectRatio: "none", role: "img",
    "aria-label": `${regions.length} flagged region(s) outlined`,
  });
  const stroke = Math.max(size.width, size.height) / 120;
  regions.forEach((region, i) => {
    const kind = region.passes_rules ? "counts" : "left-out";
    for (const ring of region.outline || []) {
      const points = ring.map(([x, y]) => `${x},${y}`).join(" ");
      for (const [cls, width] of [["shadow", 2.2 * stroke], [kind, stroke]]) {
        svg.append(svgElement("polygon", { points, class: `region ${cls}`, "stroke-width": width,
          "vector-effect": "none", "data-region": i + 1 }));
      }
    }
    const label = svgElement("text", { x: region.box.x, y: Math.max(region.box.y - stroke, 4 * stroke),
      class: `region-label ${kind}`, "font-size": 5 * stroke });
    label.textContent = String(i + 1);
    svg.append(label);
  });
  return svg;
}

/** A colour bar for the record's heatmap scale, with the pixel threshold and the score marked. */
function colourBar(record, id) {
  const range = record.heatmap_range;
  if (!range) return null;
  const span = range.vmax - range.vmin;
  const at = (x) => `${Math.min(100, Math.max(0, (100 * (x - range.vmin)) / span))}%`;
  const bar = make("div", "bar");
  const marks = [
    ["pixel-threshold", record.threshold?.pixel, "flagged above"],
    ["score-mark", record.score, "score"],
  ];
  for (const [cls, value] of marks) {
    if (!Number.isFinite(value)) continue;
    const mark = make("span", `mark ${cls}`);
    mark.style.left = at(value);
    mark.dataset.value = String(value);
    bar.append(mark);
  }
  const legend = make("div", "bar-legend", make("span", "", short(range.vmin)),
    make("span", "", `flagged > ${short(record.threshold?.pixel)}`), make("span", "", short(range.vmax)));
  const box = make("div", "colour-bar", bar, legend);
  box.id = id;
  box.dataset.vmin = String(range.vmin);
  box.dataset.vmax = String(range.vmax);
  box.setAttribute("role", "img");
  box.setAttribute("aria-label", `colour scale from ${fixed(range.vmin)} (blue) to ${fixed(range.vmax)} (dark red); ` +
    `pixels above ${fixed(record.threshold?.pixel)} are flagged; this scan's score ${fixed(record.score)}`);
  return box;
}

function figure(record, name, src, alt, caption, heatmap) {
  const frame = make("div", "frame");
  const img = document.createElement("img");
  img.id = name;
  img.src = src;
  img.alt = alt;
  frame.append(img);
  const svg = outlines(record, `outline-${name}`);
  if (svg) frame.append(svg);
  const fig = make("figure", "", frame, make("figcaption", "", caption));
  const bar = heatmap ? colourBar(record, `colour-bar-${name}`) : null;
  if (bar) fig.append(bar);
  return fig;
}

/** One line per region: number, size, depth, centre, place in the image, and the rules' verdict. */
function regionList(record) {
  const regions = record.regions || [];
  const items = regions.map((r, i) => {
    const depth = r.depth_mm === null ? "depth unknown" :
      `at most ${short(r.depth_mm, 2)} mm ${r.height_mm > 0 ? "above" : "below"} the surface around it`;
    const size = r.area_mm2 === null ? `${r.pixels} px` : `${short(r.area_mm2)} mm², ${depth}`;
    const c = r.centre_mm;
    const centre = c ? `centre x ${short(c.x, 4)}, y ${short(c.y, 4)}, z ${short(c.z, 4)} mm (scanner axes)` : "";
    const where = `pixels x ${r.box.x}–${r.box.x + r.box.width}, y ${r.box.y}–${r.box.y + r.box.height}`;
    const rules = record.rules ? (r.passes_rules ? "; passes the reject rules" : "; left out by the reject rules") : "";
    const li = make("li", r.passes_rules ? "counts" : "left-out",
      make("strong", "", `Region ${i + 1}: ${size}`), `. ${[centre, where].filter(Boolean).join("; ")}${rules}.`);
    li.dataset.area = String(r.area_mm2);
    li.dataset.depth = String(r.depth_mm);
    return li;
  });
  $("region-list").replaceChildren(...items);
  const omitted = record.regions_omitted ? ` (and ${record.regions_omitted} smaller-scoring ones not listed)` : "";
  $("regions-note").textContent = regions.length === 0 ?
    "No pixel is above the pixel threshold: nothing to outline." :
    `${regions.length} region(s) of pixels above the pixel threshold${omitted}, highest score first; ` +
    "sizes are measured in the scan's 3D points." + (record.rules ? ` Reject rules: a region counts as a defect when ` +
    `it is at least ${record.rules.min_area_mm2} mm² and ${record.rules.min_depth_mm} mm deep or high (0: no rule).` : "");
}

/** Show ``record`` (with its images) as the current result; ``after`` runs once it is on the page. */
export function showRecord(record, after) {
  state.record = record;
  const th = record.threshold || {};
  const threshold = th.image ?? record.image_threshold;
  $("result").hidden = false;
  $("result-name").textContent = record.name;
  setValue("score", fixed(record.score), record.score);
  setValue("image-threshold", fixed(threshold), threshold);
  setValue("decision", record.anomalous ? "anomalous" : "good", record.anomalous);
  $("decision").className = record.anomalous ? "bad" : "ok";
  $("decided-by").textContent = record.decided_by ? `Why: ${record.decided_by}.` : "";
  $("statement").textContent = th.statement || "";
  $("result-details").textContent = `Files ${record.rgb} + ${record.xyz}. Timings: ` +
    `${Object.entries(record.timings_ms || {}).map(([k, v]) => `${k} ${Math.round(v)} ms`).join(", ") || "n/a"}.`;
  const images = record.images || {};
  const maps = record.heatmaps || {};
  const figures = [];
  if (images.rgb) figures.push(figure(record, "image-rgb", images.rgb, `RGB image ${record.rgb}`, "RGB image", false));
  if (images["3d"]) {
    figures.push(figure(record, "image-3d", images["3d"], `3D input ${record.xyz}, rendered as an image`,
      "3D scan (as the model sees it)", false));
  }
  if (maps.fused) {
    figures.push(figure(record, "heatmap-fused", maps.fused, "Anomaly heatmap over the RGB image",
      "Anomaly heatmap (what the score is the peak of)", true));
  }
  for (const [branch, src] of Object.entries(maps)) {
    if (branch === "fused") continue;
    const role = BRANCH_ROLES[branch] || `${branch} student`;
    figures.push(figure(record, `heatmap-${idPart(branch)}`, src, `Heatmap of the ${role} (${branch}) over the RGB image`,
      `Part from the ${role} (${branch})`, true));
  }
  $("images").replaceChildren(...figures);
  $("heatmap-range").textContent = figures.length === 0 ? "This record carries no images." :
    "Every heatmap uses the colour bar under it: blue is normal, red is the most anomalous, and the scale always " +
    "reaches this scan's score. White outlines: regions above the pixel threshold" +
    (record.rules ? "; yellow: regions the reject rules leave out." : ".");
  regionList(record);
  for (const item of document.querySelectorAll("#recent-list button")) {
    item.setAttribute("aria-current", String(item.dataset.id === String(record.id)));
  }
  if (after) after();
  // Keyboard and screen-reader users land on the result; a phone scrolls to it when it is far down.
  const title = $("result-title");
  title.focus({ preventScroll: true });
  const top = title.getBoundingClientRect().top;
  if (top < 0 || top > 0.6 * window.innerHeight) $("result").scrollIntoView({ block: "start" });
}
