/*
 * The explorer's page: reads what scan_keras/explorer.py stored (the
 * encoded regions and words, the pictures, the options), computes every
 * number with SCANAttention (attention.js) and draws it. Everything is
 * recomputed in the page, so moving lambda_1 or switching t2i / i2t
 * changes the attention itself, not a stored picture of it.
 */
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const POOLING = { mean: "AVG", logsumexp: "LSE", max: "max", sum: "sum" };
  // Region labels in the picture below this weight would hide each other.
  const LABEL_FROM = 0.1;
  const SHOWN_IN_RANKING = 5;
  // The largest fill of a box drawn on no picture.
  const BOX_SHADE = 0.6;
  // Prepared pairs kept; the similarities of one caption with every
  // image are reused while lambda_1 moves.
  const CACHE_LIMIT = 4000;

  const data = JSON.parse(document.getElementById("explorer-data").textContent);
  const $ = (id) => document.getElementById(id);
  const format = (x, digits = 3) => (Number.isFinite(x) ? x.toFixed(digits) : String(x));

  // --- the stored vectors: int16 per entry, a float32 scale per vector ---
  function bytesOf(base64) {
    const text = atob(base64);
    const out = new Uint8Array(text.length);
    for (let k = 0; k < text.length; k++) out[k] = text.charCodeAt(k);
    return new DataView(out.buffer);
  }

  function vectors(block, dim) {
    const values = bytesOf(block.values);
    const scales = bytesOf(block.scales);
    const out = [];
    for (let v = 0; v < block.count; v++) {
      const scale = scales.getFloat32(4 * v, true);
      const x = new Float64Array(dim);
      for (let k = 0; k < dim; k++) x[k] = values.getInt16(2 * (v * dim + k), true) * scale;
      out.push(x);
    }
    return out;
  }

  const regionVectors = vectors(data.regions, data.dim);
  const wordVectors = vectors(data.words, data.dim);
  const wordStart = [];
  data.captions.reduce((start, caption) => {
    wordStart.push(start);
    return start + caption.tokens.length;
  }, 0);

  function regionsOf(i) {
    return regionVectors.slice(i * data.n_regions, (i + 1) * data.n_regions);
  }

  function wordsOf(c) {
    return wordVectors.slice(wordStart[c], wordStart[c] + data.captions[c].tokens.length);
  }

  const grams = new Map();
  const pairs = new Map();

  function prepared(i, c) {
    const key = `${i},${c}`;
    if (!pairs.has(key)) {
      if (pairs.size > CACHE_LIMIT) pairs.clear();
      if (!grams.has(i)) grams.set(i, SCANAttention.products(regionsOf(i), regionsOf(i)));
      pairs.set(key, SCANAttention.prepare(regionsOf(i), wordsOf(c), grams.get(i)));
    }
    return pairs.get(key);
  }

  function optionsWith(overrides) {
    return Object.assign({}, data.options, overrides || {});
  }

  /** The attention of image i and caption c, with options overridden. */
  function pair(i, c, overrides) {
    return SCANAttention.attend(prepared(i, c), optionsWith(overrides));
  }

  /** Every image's score with caption c, and each image's rank (1 = best;
   *  ties count against the image, as in scan_keras.evaluation). */
  function ranking(c, overrides) {
    const options = optionsWith(overrides);
    const scores = data.images.map((_, j) => SCANAttention.attend(prepared(j, c), options).score);
    const ranks = scores.map((score, i) => 1 + scores.filter((s, j) => j !== i && s >= score).length);
    return { scores, ranks };
  }

  // --- the state of the page ---
  const state = {
    image: 0,
    caption: 0,
    crossAttn: data.options.cross_attn,
    lambda: data.options.lambda_softmax,
    active: 0,
    result: null,
    ranking: null,
  };

  const isT2i = () => state.crossAttn === "t2i";
  const special = (token) => data.special_tokens.includes(token);
  const tokensOf = (c) => data.captions[c].tokens;
  const imageName = (i) => `image ${i}` + (data.images[i].id == null ? "" : ` (id ${data.images[i].id})`);

  function compute() {
    const overrides = { cross_attn: state.crossAttn, lambda_softmax: state.lambda };
    state.result = pair(state.image, state.caption, overrides);
    state.ranking = ranking(state.caption, overrides);
  }

  /** The query shown first: the one whose attention is sharpest (its
   *  largest weight the largest), a word rather than <start> or <end>. */
  function defaultQuery() {
    const tokens = tokensOf(state.caption);
    const peak = state.result.attention.map((weights) => Math.max(...weights));
    let best = -1;
    peak.forEach((p, q) => {
      if (isT2i() && special(tokens[q])) return;
      if (best < 0 || p > peak[best]) best = q;
    });
    return Math.max(best, 0);
  }

  // --- building the page ---
  function element(tag, attributes, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    if (text != null) node.textContent = text;
    return node;
  }

  function svgElement(tag, attributes) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    return node;
  }

  function fillControls() {
    const images = $("image-select");
    data.images.forEach((_, i) => images.append(element("option", { value: i }, imageName(i))));
    for (const radio of document.querySelectorAll("input[name=direction]")) {
      radio.checked = radio.value === state.crossAttn;
    }
    const top = Math.max(30, 2 * data.options.lambda_softmax);
    $("lambda-slider").max = top;
    $("lambda-number").max = Math.max(100, top);
  }

  function fillCaptions() {
    const select = $("caption-select");
    select.replaceChildren();
    const own = element("optgroup", { label: `Captions of image ${state.image}` });
    const others = element("optgroup", { label: "Captions of the other images (a mismatch)" });
    data.captions.forEach((caption, c) => {
      const mine = caption.image === state.image;
      const text = mine ? caption.text : `image ${caption.image}: ${caption.text}`;
      (mine ? own : others).append(element("option", { value: c }, text));
    });
    select.append(own, others);
    select.value = String(state.caption);
  }

  function chip(index, label, query) {
    const tag = query ? "button" : "span";
    const node = element(tag, { class: "chip", "data-index": index });
    if (query) {
      node.type = "button";
      node.setAttribute("aria-pressed", "false");
      for (const event of ["mouseenter", "focus", "click"]) node.addEventListener(event, () => activate(index));
    }
    node.append(element("span", { class: "label" }, label), element("span", { class: "number" }));
    const item = element("li");
    item.append(node);
    return item;
  }

  function buildWords() {
    const caption = data.captions[state.caption];
    const list = $("words");
    list.replaceChildren();
    caption.tokens.forEach((token, w) => {
      const item = chip(w, token, isT2i());
      const node = item.firstChild;
      if (special(token)) node.classList.add("special");
      if (caption.unknown.includes(w)) {
        node.classList.add("unknown");
        node.title = `"${token}" is not in the model's vocabulary: the model reads <unk>`;
      }
      list.append(item);
    });
  }

  function buildRegions() {
    const list = $("regions");
    list.replaceChildren();
    for (let r = 0; r < data.n_regions; r++) list.append(chip(r, `region ${r}`, !isT2i()));
  }

  function buildScene() {
    const image = data.images[state.image];
    const scene = $("scene");
    const title = scene.querySelector("title");
    scene.replaceChildren(title);
    title.textContent = `${imageName(state.image)} and its ${data.n_regions} regions`;
    scene.setAttribute("viewBox", `0 0 ${image.width} ${image.height}`);
    const picture = (attributes) => svgElement("image", Object.assign({
      href: image.src, x: 0, y: 0, width: image.width, height: image.height, preserveAspectRatio: "none",
    }, attributes));
    if (image.src) {
      // Dimmed towards black, so that the lit regions stand out.
      scene.append(svgElement("rect", { x: 0, y: 0, width: image.width, height: image.height, fill: "#000" }));
      scene.append(picture({ class: "dimmed" }));
    } else {
      scene.append(svgElement("rect", { x: 0, y: 0, width: image.width, height: image.height, fill: "#e8e8e8" }));
    }
    const size = Math.max(image.width, image.height) / 28;
    const area = (b) => (b[2] - b[0]) * (b[3] - b[1]);
    // Large boxes first: the small ones on top stay reachable by the pointer.
    const order = image.boxes.map((_, r) => r).sort((a, b) => area(image.boxes[b]) - area(image.boxes[a]));
    const rectangle = (r, attributes) => {
      const [x0, y0, x1, y1] = image.boxes[r];
      return svgElement("rect", Object.assign({ x: x0, y: y0, width: x1 - x0, height: y1 - y0 }, attributes));
    };
    if (image.src) {
      // Each region shows the undimmed picture in proportion to its
      // weight: a tint would change the colours the words name.
      const clips = svgElement("defs");
      for (const r of order) {
        const clip = svgElement("clipPath", { id: `region-clip-${r}` });
        clip.append(rectangle(r));
        clips.append(clip);
      }
      scene.append(clips);
      for (const r of order) {
        scene.append(picture({ class: "lit", "data-index": r, "clip-path": `url(#region-clip-${r})`, opacity: 0 }));
      }
    }
    for (const r of order) {
      const [x0, y0] = image.boxes[r];
      const group = svgElement("g", { class: "region", "data-index": r });
      const box = rectangle(r, { class: image.src ? "box on-picture" : "box", "data-index": r, "fill-opacity": 0 });
      const label = svgElement("text", {
        "data-index": r, x: x0 + size * 0.2, y: y0 + size, "font-size": size, "stroke-width": size / 6,
      });
      if (!isT2i()) {
        for (const event of ["mouseenter", "click"]) box.addEventListener(event, () => activate(r));
      }
      group.append(box, label);
      scene.append(group);
    }
  }

  function buildAll() {
    compute();
    state.active = defaultQuery();
    buildScene();
    buildWords();
    buildRegions();
    const owner = data.captions[state.caption].image;
    const note = $("mismatch");
    note.hidden = owner === state.image;
    note.replaceChildren();
    if (owner !== state.image) {
      note.append(`This caption was written for image ${owner}: it is shown with image ${state.image}, a mismatch. `);
      const back = element("button", { type: "button" }, `show image ${owner}`);
      back.addEventListener("click", () => selectImage(owner, true));
      note.append(back);
    }
    $("words-help").textContent = isT2i()
      ? "Hover, tap or tab to a word: the regions light up by its attention weight. Under each word: its relevance R."
      : "Under each word: its weight in the attention of the chosen region (the weights add up to 1); the red outline marks the largest.";
    $("regions-help").textContent = isT2i()
      ? "Under each region: its weight in the chosen word's attention (the weights add up to 1); the red outline marks the largest."
      : "Hover, tap or tab to a region (or its box): the words light up by its attention weight. Under each region: its relevance R.";
    update();
  }

  // --- what changes with the query and lambda_1 ---
  function activate(q) {
    if (q === state.active) return;
    state.active = q;
    update();
  }

  function update() {
    const { result } = state;
    const t2i = isT2i();
    const weights = result.attention[state.active];
    const top = weights.indexOf(Math.max(...weights));
    const queries = document.querySelectorAll(t2i ? "#words .chip" : "#regions .chip");
    const keys = document.querySelectorAll(t2i ? "#regions .chip" : "#words .chip");
    const tokens = tokensOf(state.caption);
    const queryName = (q) => (t2i ? `"${tokens[q]}"` : `region ${q}`);
    const keyName = (k) => (t2i ? `region ${k}` : `"${tokens[k]}"`);
    queries.forEach((node, q) => {
      const active = q === state.active;
      node.classList.toggle("active", active);
      node.classList.remove("top");
      node.style.setProperty("--w", 0);
      node.setAttribute("aria-pressed", String(active));
      node.querySelector(".number").textContent = format(result.relevance[q]);
      node.title = `relevance R of ${queryName(q)}: ${format(result.relevance[q], 4)}, the cosine with its attended ${t2i ? "image" : "sentence"} vector (Eq. ${t2i ? 3 : 7})`;
    });
    keys.forEach((node, k) => {
      node.classList.remove("active");
      node.classList.toggle("top", k === top);
      node.style.setProperty("--w", (0.85 * weights[k]).toFixed(4));
      node.querySelector(".number").textContent = format(weights[k]);
      node.title = `attention weight of ${queryName(state.active)} on ${keyName(k)}: ${format(weights[k], 4)} (Eq. ${t2i ? 2 : 6})`;
    });
    for (const box of document.querySelectorAll("#scene rect.box")) {
      const r = Number(box.dataset.index);
      const label = document.querySelector(`#scene text[data-index="${r}"]`);
      box.classList.toggle("top", t2i && r === top);
      box.classList.toggle("query", !t2i && r === state.active);
      const light = t2i ? weights[r] : Number(r === state.active);
      const lit = document.querySelector(`#scene image.lit[data-index="${r}"]`);
      if (lit) lit.setAttribute("opacity", light.toFixed(4));
      else box.setAttribute("fill-opacity", (BOX_SHADE * light).toFixed(4));
      const shown = t2i ? weights[r] >= LABEL_FROM || r === top : r === state.active;
      label.textContent = !shown ? "" : t2i ? format(weights[r]) : `R ${format(result.relevance[r])}`;
    }
    $("status").textContent =
      `${t2i ? `"${tokens[state.active]}"` : `Region ${state.active}`} attends most to ${keyName(top)} ` +
      `(weight ${format(weights[top])}); its relevance R is ${format(result.relevance[state.active])}.`;
    updateScores();
  }

  function updateScores() {
    const { result, ranking } = state;
    const n = data.images.length;
    const owner = data.captions[state.caption].image;
    $("score-mean").textContent = format(result.scores.mean, 4);
    $("score-lse").textContent = format(result.scores.logsumexp, 4);
    $("lse-label").textContent = `LSE score (λ2 = ${data.options.lambda_lse})`;
    $("score-model").textContent = `${format(result.score, 4)} (${POOLING[data.options.agg_func]})`;
    $("rank-shown").textContent = `${ranking.ranks[state.image]} of ${n} (image ${state.image})`;
    $("rank-true").textContent = `${ranking.ranks[owner]} of ${n} (image ${owner})`;
    const order = ranking.scores.map((_, j) => j).sort((a, b) => ranking.ranks[a] - ranking.ranks[b] || a - b);
    const shown = order.slice(0, SHOWN_IN_RANKING);
    for (const j of [owner, state.image]) if (!shown.includes(j)) shown.push(j);
    const list = $("ranking");
    list.replaceChildren();
    for (const j of shown) {
      const item = element("li", { value: ranking.ranks[j] });
      const what = j === owner ? "the caption's own image" : "";
      const button = element("button", { type: "button", title: `show ${imageName(j)} with this caption` },
        `image ${j}: ${format(ranking.scores[j], 4)}${what ? ` (${what})` : ""}`);
      if (j === owner) button.classList.add("own");
      if (j === state.image) button.classList.add("shown");
      button.addEventListener("click", () => selectImage(j, true));
      item.append(button);
      list.append(item);
    }
  }

  // --- the controls ---
  function selectImage(i, keepCaption) {
    state.image = i;
    if (!keepCaption) state.caption = data.captions.findIndex((caption) => caption.image === i);
    $("image-select").value = String(i);
    fillCaptions();
    buildAll();
  }

  function setLambda(value) {
    if (!(value > 0)) return;
    state.lambda = value;
    $("lambda-slider").value = value;
    if (Number($("lambda-number").value) !== value) $("lambda-number").value = value;
    compute();
    update();
  }

  function summary() {
    const o = data.options;
    const lse = o.agg_func === "logsumexp" ? `, λ2 = ${o.lambda_lse}` : "";
    const preset = data.model.preset ? ` (preset ${data.model.preset})` : "";
    $("summary").textContent =
      `Model ${data.model.name}${preset}: ${o.cross_attn}, λ1 = ${o.lambda_softmax}, ${POOLING[o.agg_func]} pooling${lse}, ` +
      `raw_feature_norm ${o.raw_feature_norm}, a ${data.dim}-d joint space. The first ${data.images.length} of the ` +
      `${data.split_images} images of the ${data.split} split of ${data.data}, with their ${data.captions.length} captions.`;
    $("precision-note").textContent =
      "The page computes in float64 from the region and word vectors the model encoded, stored as 16-bit " +
      "integers with a scale per vector: its numbers differ from the model's by about 1e-4.";
  }

  function start() {
    summary();
    fillControls();
    fillCaptions();
    $("image-select").addEventListener("change", (event) => selectImage(Number(event.target.value), false));
    $("caption-select").addEventListener("change", (event) => {
      state.caption = Number(event.target.value);
      buildAll();
    });
    for (const radio of document.querySelectorAll("input[name=direction]")) {
      radio.addEventListener("change", () => {
        state.crossAttn = radio.value;
        buildAll();
      });
    }
    $("lambda-slider").addEventListener("input", (event) => setLambda(Number(event.target.value)));
    $("lambda-number").addEventListener("input", (event) => setLambda(Number(event.target.value)));
    $("lambda-reset").addEventListener("click", () => setLambda(data.options.lambda_softmax));
    $("controls").addEventListener("submit", (event) => event.preventDefault());
    $("lambda-slider").value = state.lambda;
    $("lambda-number").value = state.lambda;
    buildAll();
  }

  // What the tests (and a curious reader, from the console) call.
  window.SCANExplorer = {
    data,
    attention: SCANAttention,
    regions: (i) => regionsOf(i).map((v) => Array.from(v)),
    words: (c) => wordsOf(c).map((v) => Array.from(v)),
    pair,
    ranking,
    state: () => ({ image: state.image, caption: state.caption, crossAttn: state.crossAttn, lambda: state.lambda, active: state.active }),
    selectImage,
    selectCaption: (c) => {
      state.caption = c;
      $("caption-select").value = String(c);
      buildAll();
    },
  };
  start();
})();
