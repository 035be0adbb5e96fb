// The slide viewer: OpenSeadragon over /dz/<id>.dzi, the tile-score heatmap as a second image
// (one cell per tile, painted with score's colour map), the tissue outline as SVG, the score under
// the mouse. window.reviewState records what happened, for people debugging and for the browser test.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("slide-data").textContent);
  var state = window.reviewState = {
    tilesLoaded: 0, tileErrors: 0, overlayDrawn: false, overlayTiles: 0, outlinePolygons: 0,
    opened: false, layer: null, resolution: null, note: ""
  };
  // "n" / "p": next / previous slide in the batch page's filter (also on an unavailable slide's page)
  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || /INPUT|SELECT|TEXTAREA/.test(event.target.tagName)) { return; }
    var link = document.getElementById(event.key === "n" ? "next" : event.key === "p" ? "prev" : "");
    if (link) { window.location.href = link.href; }
  });
  var container = document.getElementById("viewer");
  if (!container) { return; }  // slide unavailable: the page says why

  var viewer = OpenSeadragon({
    id: "viewer",
    prefixUrl: "/static/openseadragon/images/",
    tileSources: data.dzi,
    drawer: "canvas",
    showNavigator: true,
    navigatorPosition: "BOTTOM_RIGHT",
    maxZoomPixelRatio: 2,
    crossOriginPolicy: false,
    gestureSettingsMouse: { clickToZoom: false }
  });
  var slideItem = null, overlayItem = null, scores = null, grid = null;
  var resSelect = document.getElementById("resolution");
  var layerSelect = document.getElementById("layer");
  var opacity = document.getElementById("opacity");
  var note = document.getElementById("overlay-note");
  var hover = document.getElementById("hover-score");

  viewer.addHandler("tile-loaded", function () {
    state.tilesLoaded += 1;
    if (!state.firstTileMs) { state.firstTileMs = performance.now(); }   // ms since navigation started
  });
  viewer.addHandler("tile-load-failed", function () { state.tileErrors += 1; });

  function lutColour(value) {
    var i = Math.max(0, Math.min(255, Math.round(value * 255)));
    return data.lut[i];
  }

  // colour bar
  (function () {
    var bar = document.getElementById("colorbar");
    if (!bar) { return; }
    var ctx = bar.getContext("2d");
    for (var x = 0; x < bar.width; x++) {
      var c = lutColour(x / (bar.width - 1));
      ctx.fillStyle = "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")";
      ctx.fillRect(x, 0, 1, bar.height);
    }
  })();

  function slideWidth() {
    return slideItem ? slideItem.source.dimensions.x : (data.dimensions ? data.dimensions[0] : 1);
  }

  // a (ny, nx) grid of one layer's tile scores (NaN where no tile) on the tile lattice from (0, 0)
  function buildGrid(res, layer) {
    var r = scores.resolutions[res];
    var side = r.side, values = r.layers[layer];
    var nx = 1, ny = 1, i;
    var cols = new Int32Array(r.x.length), rows = new Int32Array(r.x.length);
    for (i = 0; i < r.x.length; i++) {
      cols[i] = Math.round(r.x[i] / side); rows[i] = Math.round(r.y[i] / side);
      nx = Math.max(nx, cols[i] + 1); ny = Math.max(ny, rows[i] + 1);
    }
    var cells = new Float32Array(nx * ny).fill(NaN);
    for (i = 0; i < values.length; i++) { cells[rows[i] * nx + cols[i]] = values[i]; }
    return { nx: nx, ny: ny, side: side, cells: cells, count: values.length };
  }

  function drawOverlay() {
    var res = resSelect.value, layer = layerSelect.value;
    if (!scores || !scores.resolutions[res] || !slideItem) { return; }
    grid = buildGrid(res, layer);
    // k canvas pixels per tile: crisp cells after the browser's smoothing, bounded canvas size
    var k = Math.max(1, Math.min(16, Math.floor(2048 / Math.max(grid.nx, grid.ny))));
    var canvas = document.createElement("canvas");
    canvas.width = grid.nx * k; canvas.height = grid.ny * k;
    var ctx = canvas.getContext("2d");
    var image = ctx.createImageData(canvas.width, canvas.height);
    for (var row = 0; row < grid.ny; row++) {
      for (var col = 0; col < grid.nx; col++) {
        var v = grid.cells[row * grid.nx + col];
        if (isNaN(v)) { continue; }
        var c = lutColour(v);
        for (var dy = 0; dy < k; dy++) {
          var base = ((row * k + dy) * canvas.width + col * k) * 4;
          for (var dx = 0; dx < k; dx++) {
            var p = base + dx * 4;
            image.data[p] = c[0]; image.data[p + 1] = c[1]; image.data[p + 2] = c[2]; image.data[p + 3] = 255;
          }
        }
      }
    }
    ctx.putImageData(image, 0, 0);
    if (overlayItem) { viewer.world.removeItem(overlayItem); overlayItem = null; }
    viewer.addTiledImage({
      tileSource: { type: "image", url: canvas.toDataURL("image/png"), buildPyramid: false },
      x: 0, y: 0, width: grid.nx * grid.side / slideWidth(),
      opacity: parseFloat(opacity.value),
      success: function (event) {
        overlayItem = event.item;
        state.overlayDrawn = true; state.overlayTiles = grid.count; state.overlayMs = performance.now();
        state.resolution = res; state.layer = layer;
      },
      error: function (event) { note.textContent = "heatmap could not be drawn: " + (event.message || "error"); }
    });
  }

  function fillLayers() {
    var r = scores.resolutions[resSelect.value];
    layerSelect.innerHTML = "";
    ["ensemble"].concat(r.members).forEach(function (name) {
      var o = document.createElement("option");
      o.value = name; o.textContent = name === "ensemble" ? "ensemble (mean of the " + resSelect.value + " members)" : "member " + name;
      layerSelect.appendChild(o);
    });
  }

  function setUpScores(payload) {
    scores = payload;
    var names = Object.keys(scores.resolutions);
    if (!names.length) {
      note.textContent = "No heatmap: " + (scores.note || "no tile scores") + ".";
      state.note = note.textContent;
      resSelect.disabled = layerSelect.disabled = opacity.disabled = true;
      return;
    }
    names.forEach(function (name) {
      var o = document.createElement("option");
      o.value = name; o.textContent = name + " (" + scores.resolutions[name].x.length + " tiles)";
      resSelect.appendChild(o);
    });
    fillLayers();
    resSelect.addEventListener("change", function () { fillLayers(); drawOverlay(); });
    layerSelect.addEventListener("change", drawOverlay);
    drawOverlay();
  }

  opacity.addEventListener("input", function () {
    if (overlayItem) { overlayItem.setOpacity(parseFloat(opacity.value)); }
  });

  // tissue outline: an SVG over the canvas, moved with the slide
  var SVG = "http://www.w3.org/2000/svg";
  var svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "outline");
  var group = document.createElementNS(SVG, "g");
  svg.appendChild(group);
  viewer.canvas.appendChild(svg);
  var outlineBox = document.getElementById("outline");
  outlineBox.addEventListener("change", function () { svg.style.display = outlineBox.checked ? "" : "none"; });

  function placeOutline() {
    if (!slideItem) { return; }
    var p0 = slideItem.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    var p1 = slideItem.imageToViewerElementCoordinates(new OpenSeadragon.Point(1000, 0));
    var s = (p1.x - p0.x) / 1000;
    group.setAttribute("transform", "translate(" + p0.x + "," + p0.y + ") scale(" + s + ")");
  }
  ["animation", "animation-finish", "resize", "update-viewport"].forEach(function (name) {
    viewer.addHandler(name, placeOutline);
  });

  function setUpOutline(payload) {
    var d = "";
    payload.polygons.forEach(function (polygon) {
      polygon.forEach(function (ring) {
        ring.forEach(function (pt, i) { d += (i ? "L" : "M") + pt[0] + " " + pt[1]; });
        d += "Z";
      });
    });
    if (d) {
      var path = document.createElementNS(SVG, "path");
      path.setAttribute("d", d);
      path.setAttribute("vector-effect", "non-scaling-stroke");
      group.appendChild(path);
    }
    state.outlinePolygons = payload.polygons.length;
    placeOutline();
  }

  // the score under the mouse
  new OpenSeadragon.MouseTracker({
    element: viewer.canvas,
    moveHandler: function (event) {
      if (!slideItem || !grid) { return; }
      var p = slideItem.viewerElementToImageCoordinates(event.position);
      var col = Math.floor(p.x / grid.side), row = Math.floor(p.y / grid.side);
      var v = (col >= 0 && row >= 0 && col < grid.nx && row < grid.ny) ? grid.cells[row * grid.nx + col] : NaN;
      hover.textContent = isNaN(v) ? "— (no scored tile here)" : v.toFixed(3) + " (" + state.layer + ", " + state.resolution + ")";
    }
  });

  viewer.addHandler("open", function () {
    slideItem = viewer.world.getItemAt(0);
    state.opened = true;
    fetch(data.scores).then(function (r) { return r.json(); }).then(setUpScores)
      .catch(function (e) { note.textContent = "tile scores could not be loaded: " + e; });
    fetch(data.tissue).then(function (r) { return r.ok ? r.json() : { polygons: [] }; }).then(setUpOutline)
      .catch(function () { state.outlinePolygons = 0; });
  });
  viewer.addHandler("open-failed", function (event) {
    note.textContent = "the slide could not be opened: " + (event.message || "error");
    state.note = note.textContent;
  });
})();
