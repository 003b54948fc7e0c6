// The atlas page: routes in the fragment (#/, #/LAYER, #/LAYER/UNIT, #/?q=SEARCH), data from the scripts that
// convscope wrote beside the page (window.ATLAS, then one script per layer, loaded when it is first opened).
"use strict";

(function () {
  const atlas = window.ATLAS;
  const view = document.getElementById("view");
  const loaded = {};
  const waiting = {};
  let sortKey = "unit";

  const SORTS = {
    unit: { label: "unit number", compare: (a, b) => a.unit - b.unit },
    mean: { label: "mean activation (highest first)", compare: (a, b) => (b.mean ?? -Infinity) - (a.mean ?? -Infinity) },
    fired: { label: "how often it fires (most first)", compare: (a, b) => b.fired - a.fired },
    rarest: { label: "how often it fires (least first)", compare: (a, b) => a.fired - b.fired },
    score: { label: "picture's score (highest first)", compare: (a, b) => (b.score ?? -Infinity) - (a.score ?? -Infinity) },
  };

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function route(layer, unit) {
    let hash = "#/" + encodeURIComponent(layer);
    if (unit !== undefined) hash += "/" + unit;
    return hash;
  }

  function layerNumber(name) {
    return atlas.layers.findIndex((layer) => layer.name === name);
  }

  // Called by each layer's data script.
  window.atlasLayerLoaded = function (number, data) {
    loaded[number] = data;
    (waiting[number] || []).forEach((resolve) => resolve(data));
    delete waiting[number];
  };

  function layerData(number) {
    if (loaded[number]) return Promise.resolve(loaded[number]);
    return new Promise((resolve, reject) => {
      if (!waiting[number]) {
        waiting[number] = [];
        const script = el("script", { src: atlas.layers[number].file });
        script.onerror = () => reject(new Error("cannot read " + atlas.layers[number].file));
        document.body.append(script);
      }
      waiting[number].push(resolve);
    });
  }

  function show(title, ...content) {
    document.title = title + " - convscope atlas";
    view.replaceChildren(...content);
    view.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }

  function badges(unit) {
    return [
      unit.dead ? el("span", { class: "badge" }, unit.dead_weights ? "dead (all weights zero)" : "dead") : null,
      unit.rare ? el("span", { class: "badge rare" }, "rare") : null,
    ];
  }

  function percent(share) {
    return (100 * share).toFixed(share < 0.01 && share > 0 ? 2 : 1) + " %";
  }

  function showIndex() {
    const total = atlas.layers.reduce((sum, layer) => sum + layer.units, 0);
    const rows = atlas.layers.map((layer) => el("tr", null,
      el("th", { scope: "row" }, el("a", { href: route(layer.name) }, layer.name)),
      el("td", null, layer.shape.join(" × ")), el("td", null, layer.units), el("td", null, layer.dead),
      el("td", null, layer.rare)));
    show(atlas.model,
      el("h1", null, "Atlas of " + atlas.model),
      el("section", { "aria-labelledby": "layers-title" },
        el("h2", { id: "layers-title" }, "Layers"),
        el("p", { class: "note" }, `${atlas.layers.length} layers, ${total} units, examples from ${atlas.images} images` +
          (atlas.labelled ? " (labelled: units are named after the class of most of their examples)." : ".") +
          " Link to a unit with #/LAYER/UNIT."),
        el("table", null,
          el("thead", null, el("tr", null, ...["layer", "output", "units", "dead", "rare"].map(
            (name) => el("th", { scope: "col" }, name)))),
          el("tbody", null, rows))));
  }

  function unitTile(layer, unit) {
    const caption = unit.name ? `${unit.unit}: ${unit.name}` : String(unit.unit);
    return el("li", null, el("a", { href: route(layer, unit.unit) },
      unit.picture ? el("img", { src: unit.picture, alt: `feature picture of unit ${unit.unit}`, loading: "lazy",
        width: 96, height: 96 }) : null,
      el("span", null, caption), " ", badges(unit)));
  }

  function showLayer(number) {
    layerData(number).then((data) => {
      const info = atlas.layers[number];
      const units = data.units.slice().sort(SORTS[sortKey].compare);
      const select = el("select", { id: "sort" }, Object.entries(SORTS).map(([key, sort]) =>
        el("option", { value: key, selected: key === sortKey }, sort.label)));
      select.addEventListener("change", () => {
        sortKey = select.value;
        showLayer(number);
      });
      show(info.name,
        el("p", null, el("a", { href: "#/" }, "All layers")),
        el("h1", null, info.name),
        el("p", { class: "note" }, `${info.units} units (output ${info.shape.join(" × ")}), ${info.dead} dead, ` +
          `${info.rare} rare.`),
        el("p", null, el("label", { for: "sort" }, "Sort by "), select),
        el("ul", { class: "units" }, units.map((unit) => unitTile(info.name, unit))));
    }, failed);
  }

  function stat(name, value) {
    return el("tr", null, el("th", { scope: "row" }, name), el("td", null, value));
  }

  function showUnit(number, index) {
    layerData(number).then((data) => {
      const info = atlas.layers[number];
      const unit = data.units.find((u) => u.unit === index);
      if (!unit) {
        notFound(`${info.name} has no unit ${index}`);
        return;
      }
      const named = unit.name && unit.named_by ?
        `${unit.named_by} of ${unit.examples.length} examples are ${unit.name}` : unit.name;
      const examples = unit.examples.map((example, rank) => el("li", null,
        el("a", { href: example.page },
          el("img", { src: example.thumb, alt: `example ${rank + 1}: ${example.file}`, loading: "lazy" }),
          `${rank + 1}. ${example.file}`),
        el("br"), `maximum ${example.value}` + (example.true ? `, ${example.true}` : "")));
      const neighbours = el("nav", { class: "steps", "aria-label": "neighbouring units" },
        index > 0 ? el("a", { href: route(info.name, index - 1) }, "← unit " + (index - 1)) : null,
        el("a", { href: route(info.name) }, "all of " + info.name),
        index + 1 < info.units ? el("a", { href: route(info.name, index + 1) }, "unit " + (index + 1) + " →") : null);
      show(`${info.name} unit ${index}`,
        neighbours,
        el("h1", null, `${info.name}, unit ${index}`, named ? ": " + named : ""),
        el("div", { class: "unit" },
          unit.picture ? el("figure", null,
            el("img", { class: "picture", src: unit.picture, alt: `feature picture of ${info.name} unit ${index}` }),
            el("figcaption", null, info.logits ? "class picture" : "feature picture")) : null,
          el("table", null, el("tbody", null,
            stat("mean activation", unit.mean ?? "n/a"),
            stat("fires on", percent(unit.fired) + " of the images"),
            stat("picture's score", unit.score ?? "n/a"),
            stat("flags", unit.dead || unit.rare ? badges(unit) : "none")))),
        el("section", { "aria-labelledby": "examples-title" },
          el("h2", { id: "examples-title" }, "Dataset examples"),
          unit.crops ? el("img", { class: "crops", src: unit.crops,
            alt: `the crops of unit ${index}'s ${unit.examples.length} strongest examples, best first` }) : null,
          unit.examples.length ? el("ul", { class: "examples" }, examples) :
            el("p", null, "No image excites this unit.")));
    }, failed);
  }

  function showSearch(query) {
    const text = query.trim().toLowerCase();
    const results = [];
    if (/^\d+$/.test(text)) {
      const index = Number(text);
      atlas.layers.forEach((layer) => {
        if (index < layer.units) results.push([layer.name, index, null]);
      });
    } else if (text) {
      for (const [number, unit, name] of atlas.named) {
        if (name.toLowerCase().includes(text)) results.push([atlas.layers[number].name, unit, name]);
        if (results.length >= 500) break;
      }
    }
    show("Search",
      el("h1", null, `Units matching “${query}”`),
      results.length ? el("ul", null, results.map(([layer, unit, name]) => el("li", null,
        el("a", { href: route(layer, unit) }, `${layer}, unit ${unit}` + (name ? `: ${name}` : ""))))) :
        el("p", null, "No unit matches. Search a unit number, a class name or a unit's name."));
  }

  function notFound(message) {
    show("Not found", el("h1", null, "Not found"), el("p", null, message + ". "), el("a", { href: "#/" }, "All layers"));
  }

  function failed(error) {
    show("Error", el("h1", null, "Cannot show this page"), el("p", null, String(error.message || error)));
  }

  function render() {
    const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
    if (hash.startsWith("?q=")) {
      showSearch(hash.slice(3));
      return;
    }
    if (!hash) {
      showIndex();
      return;
    }
    let number = layerNumber(hash);
    if (number >= 0) {
      showLayer(number);
      return;
    }
    const slash = hash.lastIndexOf("/");
    number = slash > 0 ? layerNumber(hash.slice(0, slash)) : -1;
    const unit = Number(hash.slice(slash + 1));
    if (number >= 0 && Number.isInteger(unit)) {
      showUnit(number, unit);
      return;
    }
    notFound(`No layer or unit ${hash}`);
  }

  document.getElementById("search").addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = "#/?q=" + encodeURIComponent(document.getElementById("query").value);
  });
  window.addEventListener("hashchange", render);
  document.getElementById("loading").remove();
  if (!atlas) {
    view.append(el("p", null, "The atlas's data (data/index.js) could not be read."));
  } else {
    render();
  }
})();
