(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const actLayers = new Map(data.activations.layers.map((l) => [l.name, l]));
  const filterLayers = new Map(data.filters.layers.map((l) => [l.name, l]));
  const viewer = document.getElementById("viewer");
  const canvas = document.getElementById("viewer-canvas");
  const title = document.getElementById("viewer-title");
  const examplesLink = document.getElementById("viewer-examples");
  function hasExamples(examples, name, index) {
    return Object.prototype.hasOwnProperty.call(examples.layers, name) && index < examples.layers[name];
  }
  const stats = document.getElementById("viewer-stats");
  let current = null;  // {kind, name, position}
  let shownImage = 0;  // which image's intermediate outputs are shown
  const imageSelect = document.getElementById("act-image");

  function gridImage(kind, name) {
    return Array.from(document.querySelectorAll("img.grid")).find(
      (img) => img.dataset.kind === kind && img.dataset.layer === name &&
        (kind !== "activations" || Number(img.dataset.image) === shownImage));
  }
  const actPhoto = document.getElementById("act-photo");
  imageSelect.addEventListener("change", () => {
    shownImage = Number(imageSelect.value);
    const image = data.images[shownImage];
    actPhoto.src = image.animation || image.file;
    actPhoto.width = image.width;
    actPhoto.height = image.height;
    actPhoto.alt = (image.frames ? "Input clip " : "Input photo ") + image.name;
    document.getElementById("act-photo-name").textContent = image.name;
    drawTiles(shownLayerSection());
  });
  function count(kind, layer) { return kind === "activations" ? layer.shape[0] : layer.filters.length; }
  function box(kind, layer, position) {
    const column = position % layer.columns, row = Math.floor(position / layer.columns);
    if (kind === "activations") {
      const [w, h] = layer.tile, s = layer.separator;
      return [column * (w + s), row * (h + s), w, h];
    }
    const size = layer.size, m = layer.margin;
    return [m + column * (size + m), m + row * (size + m), size, size];
  }
  function hashFor(kind, name, position) {
    if (kind === "activations") return "#activations/" + name + "/" + position;
    return "#filters/" + name + "/" + filterLayers.get(name).filters[position].index;
  }
  function fmt(v) { return Number(v).toPrecision(4); }

  function show(kind, name, position, updateHash) {
    const layer = (kind === "activations" ? actLayers : filterLayers).get(name);
    const img = gridImage(kind, name);
    if (!layer || !img || position < 0 || position >= count(kind, layer)) return;
    current = {kind, name, position};
    const [x, y, w, h] = box(kind, layer, position);
    const scale = Math.max(1, Math.floor(Math.min(512 / w, 512 / h)));
    canvas.width = w * scale;
    canvas.height = h * scale;
    const draw = () => {
      const ctx = canvas.getContext("2d");
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(img, x, y, w, h, 0, 0, w * scale, h * scale);
    };
    if (img.complete) draw(); else img.addEventListener("load", draw, {once: true});
    if (kind === "activations") {
      const [lo, mean, hi] = layer.stats[shownImage][position];
      title.textContent = name + ", channel " + position +
        (data.activations.images.length > 1 ? " (" + data.activations.images[shownImage] + ")" : "");
      stats.textContent = "min " + fmt(lo) + " \u00b7 mean " + fmt(mean) + " \u00b7 max " + fmt(hi) +
        " (" + layer.shape[1] + "\u00d7" + layer.shape[2] + ", shown " + scale + "\u00d7)";
    } else {
      const filter = layer.filters[position];
      if (filter.label) {  // a class picture
        title.textContent = "class picture: " + filter.label + " (" + filter.index + ")";
        stats.textContent = "logit " + fmt(filter.score) + (filter.status ? " \u00b7 " + filter.status : "");
      } else {
        title.textContent = name + ", filter " + filter.index;
        stats.textContent = "score (" + (filter.objective === "neuron" ? "centre-unit" : "mean") + " pre-activation) " +
          fmt(filter.score) + (filter.status ? " \u00b7 " + filter.status : "");
      }
    }
    const examples = data.dataset_examples;
    const linked = kind === "filters" && examples && hasExamples(examples, name, layer.filters[position].index);
    examplesLink.hidden = !linked;
    if (linked) examplesLink.href = examples.index + "#examples/" + name + "/" + layer.filters[position].index;
    canvas.setAttribute("aria-label", title.textContent + " enlarged");
    if (!viewer.open) viewer.showModal();
    if (updateHash) history.replaceState(null, "", hashFor(kind, name, position));
  }

  function closeViewer() {
    if (viewer.open) viewer.close();
  }
  viewer.addEventListener("close", () => {
    if (current) history.replaceState(null, "", "#" + current.kind + "/" + current.name);
    current = null;
  });
  document.getElementById("viewer-close").addEventListener("click", closeViewer);
  document.getElementById("viewer-prev").addEventListener("click", () => current && show(current.kind, current.name, current.position - 1, true));
  document.getElementById("viewer-next").addEventListener("click", () => current && show(current.kind, current.name, current.position + 1, true));
  viewer.addEventListener("keydown", (event) => {
    if (!current) return;
    if (event.key === "ArrowLeft") show(current.kind, current.name, current.position - 1, true);
    if (event.key === "ArrowRight") show(current.kind, current.name, current.position + 1, true);
  });

  document.querySelectorAll("img.grid").forEach((img) => {
    img.addEventListener("click", (event) => {
      if (img.hidden) return;
      const kind = img.dataset.kind, name = img.dataset.layer;
      const layer = (kind === "activations" ? actLayers : filterLayers).get(name);
      const rect = img.getBoundingClientRect();
      const px = (event.clientX - rect.left) * img.naturalWidth / rect.width;
      const py = (event.clientY - rect.top) * img.naturalHeight / rect.height;
      for (let position = 0; position < count(kind, layer); position++) {
        const [x, y, w, h] = box(kind, layer, position);
        if (px >= x && px < x + w && py >= y && py < y + h) { show(kind, name, position, true); return; }
      }
    });
  });
  document.querySelectorAll("form.pick").forEach((form) => {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const kind = form.dataset.kind, name = form.dataset.layer;
      const value = Number(form.elements.index.value);
      const position = kind === "activations" ? value : filterLayers.get(name).filters.findIndex((f) => f.index === value);
      show(kind, name, position, true);
    });
  });

  // A layer's channels as tiles that use the panel's width: at least 48 px for layers of up to 512
  // channels (24 px beyond), a tile never drawn smaller than the PNG's, at most 128 px unless the PNG's
  // is larger, as many a row as fit; drawn without smoothing from the grid PNG (whose layout stays as documented).
  const TILE_GAP = 2;
  function tileLayout(layer, available) {
    const [w, h] = layer.tile, n = layer.shape[0];
    const wanted = Math.max(n <= 512 ? 48 : 24, w);
    const columns = Math.max(1, Math.min(n, Math.floor((available + TILE_GAP) / (wanted + TILE_GAP))));
    const fits = Math.floor((available - TILE_GAP * (columns - 1)) / columns);
    const size = Math.max(1, Math.min(fits, Math.max(wanted, 128)));
    return {columns, size, height: Math.max(1, Math.round(size * h / w)), rows: Math.ceil(n / columns)};
  }
  function drawTiles(section) {
    if (!section || section.hidden) return;
    const name = section.dataset.layer, layer = actLayers.get(name);
    const tiles = section.querySelector("canvas.tiles"), img = gridImage("activations", name);
    if (!tiles || !img) return;
    if (!img.complete || !img.naturalWidth) { img.addEventListener("load", () => drawTiles(section), {once: true}); return; }
    const layout = tileLayout(layer, section.clientWidth);
    const ratio = window.devicePixelRatio || 1;
    const cssWidth = layout.columns * (layout.size + TILE_GAP) - TILE_GAP;
    const cssHeight = layout.rows * (layout.height + TILE_GAP) - TILE_GAP;
    tiles.style.width = cssWidth + "px";
    tiles.style.height = cssHeight + "px";
    tiles.width = Math.round(cssWidth * ratio);
    tiles.height = Math.round(cssHeight * ratio);
    Object.assign(tiles.dataset, {columns: layout.columns, size: layout.size, tileHeight: layout.height});
    const ctx = tiles.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    for (let position = 0; position < layer.shape[0]; position++) {
      const [x, y, w, h] = box("activations", layer, position);
      const column = position % layout.columns, row = Math.floor(position / layout.columns);
      ctx.drawImage(img, x, y, w, h, Math.round(column * (layout.size + TILE_GAP) * ratio),
        Math.round(row * (layout.height + TILE_GAP) * ratio), Math.round(layout.size * ratio),
        Math.round(layout.height * ratio));
    }
  }
  function shownLayerSection() { return document.querySelector("section.layer:not([hidden])"); }
  // A video network's layer: the frame slider shows each image's grid of that frame.
  document.querySelectorAll("input.frame").forEach((slider) => {
    slider.addEventListener("input", () => {
      const frame = Number(slider.value);
      document.querySelectorAll("img.grid").forEach((img) => {
        if (img.dataset.kind === "activations" && img.dataset.layer === slider.dataset.layer && img.dataset.frames) {
          img.src = JSON.parse(img.dataset.frames)[frame];
        }
      });
      slider.nextElementSibling.textContent = (frame + 1) + " of " + (Number(slider.max) + 1);
      drawTiles(shownLayerSection());
    });
  });
  document.querySelectorAll("canvas.tiles").forEach((tiles) => {
    tiles.addEventListener("click", (event) => {
      const rect = tiles.getBoundingClientRect(), d = tiles.dataset;
      const column = Math.floor((event.clientX - rect.left) / (Number(d.size) + TILE_GAP));
      const row = Math.floor((event.clientY - rect.top) / (Number(d.tileHeight) + TILE_GAP));
      const position = row * Number(d.columns) + column;
      if (column < Number(d.columns)) show("activations", tiles.dataset.layer, position, true);
    });
  });
  if (window.ResizeObserver) {
    let width = 0;
    new ResizeObserver((entries) => {
      const now = Math.round(entries[0].contentRect.width);
      if (now !== width) { width = now; drawTiles(shownLayerSection()); }
    }).observe(document.querySelector("section#activations"));
  }

  function selectLayer(name) {
    let found = null;
    document.querySelectorAll("section.layer").forEach((section) => {
      const match = section.dataset.layer === name;
      section.hidden = !match;
      if (match) found = section;
    });
    document.querySelectorAll(".layers a").forEach((a) => a.setAttribute("aria-current", String(a.dataset.layer === name)));
    drawTiles(found);
    return found;
  }

  const linkNote = document.getElementById("link-note");
  function unknownLink(text) {
    linkNote.textContent = text;
    linkNote.hidden = false;
    linkNote.scrollIntoView();
  }

  // A link names a layer, or a layer and a channel (filter) number; a layer name may contain "/".
  function linkTarget(parts, layers) {
    const whole = parts.slice(1).join("/");
    if (layers.has(whole)) return {name: whole, number: null};
    const name = parts.slice(1, -1).join("/");
    const number = parts[parts.length - 1];
    if (parts.length >= 3 && layers.has(name) && /^[0-9]+$/.test(number)) return {name, number: Number(number)};
    return {name: parts.length >= 3 && layers.has(name) ? name : whole, number: null, bad: true,
            channel: parts.length >= 3 && layers.has(name) ? number : null};
  }

  function route() {
    const hash = decodeURIComponent(location.hash.slice(1));
    const parts = hash.split("/");
    linkNote.hidden = true;
    if (parts[0] === "activations" && parts.length >= 2) {
      const target = linkTarget(parts, actLayers);
      if (target.bad && target.channel === null) {
        unknownLink("The link names no layer \u201c" + target.name + "\u201d; the current layer is still shown.");
        return;
      }
      const layer = actLayers.get(target.name);
      if (target.bad || target.number >= layer.shape[0]) {
        unknownLink("The link names no channel \u201c" + (target.bad ? target.channel : target.number) +
          "\u201d of layer " + target.name + " (it has " + layer.shape[0] + ", numbered from 0).");
        return;
      }
      const section = selectLayer(target.name);
      section.scrollIntoView();
      if (target.number !== null) show("activations", target.name, target.number, false);
      else closeViewer();
    } else if (parts[0] === "filters" && parts.length >= 2) {
      const target = linkTarget(parts, filterLayers);
      if (target.bad && target.channel === null) {
        unknownLink("The link names no filter layer \u201c" + target.name + "\u201d.");
        return;
      }
      const layer = filterLayers.get(target.name);
      const position = target.bad ? -1 : target.number === null ? null :
        layer.filters.findIndex((f) => f.index === target.number);
      if (position === -1) {
        unknownLink("The link names a filter that layer " + target.name + " does not show.");
        return;
      }
      document.getElementById("filters/" + target.name).scrollIntoView();
      if (position !== null) show("filters", target.name, position, false);
      else closeViewer();
    } else if (hash) {
      const target = document.getElementById(hash);
      if (target) target.scrollIntoView();
    }
  }
  window.addEventListener("hashchange", route);
  if (data.activations.layers.length) selectLayer(data.activations.layers[0].name);
  route();

  // "Why this class" links to a channel's tile of its own image: show that image's grids first.
  document.querySelectorAll("a[data-image]").forEach((a) => {
    a.addEventListener("click", () => {
      imageSelect.value = a.dataset.image;
      imageSelect.dispatchEvent(new Event("change"));
    });
  });

  const opacity = document.getElementById("opacity");
  const opacityValue = document.getElementById("opacity-value");
  opacity.addEventListener("input", () => {
    document.querySelectorAll("img.heat").forEach((img) => { img.style.opacity = opacity.value / 100; });
    opacityValue.textContent = opacity.value + "\u00a0%";
  });
})();
