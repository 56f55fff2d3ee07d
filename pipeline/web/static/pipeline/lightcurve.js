// Light curve of one object as inline SVG (no library): detections with errors per band, upper limits,
// difference or corrected magnitudes, dubious points marked, folded at the best period when there is one.
// Clicking a detection that came with cutouts shows its stamps.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("lc-data").textContent);
  var box = document.getElementById("lightcurve");
  var tip = document.getElementById("lc-tip");
  var NS = "http://www.w3.org/2000/svg";
  var BANDS = {1: {name: "g", colour: "#1a9850"}, 2: {name: "r", colour: "#d73027"}, 3: {name: "i", colour: "#7b3294"}};
  var hidden = {};  // bands switched off by a click on the legend
  var W = 900, H = 400, PAD = {l: 58, r: 16, t: 34, b: 44};

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var k in attrs) { node.setAttribute(k, attrs[k]); }
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function ticks(lo, hi, n) {
    var span = hi - lo || 1, step = Math.pow(10, Math.floor(Math.log10(span / n)));
    [1, 2, 5, 10].some(function (m) { if (span / (step * m) <= n) { step *= m; return true; } return false; });
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) { out.push(+v.toFixed(10)); }
    return out;
  }

  function state() {
    return {
      mode: document.querySelector("input[name=lcmode]:checked").value,
      limits: document.getElementById("lc-limits").checked,
      fold: document.getElementById("lc-fold").checked && !!data.period
    };
  }

  function points(s) {
    var pts = [], t0 = data.detections.length ? data.detections[0].mjd : 0;
    data.detections.forEach(function (d) {
      var mag = s.mode === "corrected" ? d.mag_corr : d.mag;
      var err = s.mode === "corrected" ? d.err_corr : d.err;
      if (mag === null || mag === undefined || hidden[d.fid]) { return; }
      if (s.fold) {
        var phase = (((d.mjd - t0) / data.period) % 1 + 1) % 1;
        pts.push({x: phase, mag: mag, err: err, d: d}, {x: phase + 1, mag: mag, err: err, d: d});
      } else {
        pts.push({x: d.mjd, mag: mag, err: err, d: d});
      }
    });
    var limits = (s.limits && !s.fold) ? data.non_detections.filter(function (n) { return !hidden[n.fid]; })
      .map(function (n) { return {x: n.mjd, mag: n.mag, n: n}; }) : [];
    return {dets: pts, limits: limits};
  }

  function isoDate(mjd) {  // MJD 40587 is 1970-01-01
    return new Date((mjd - 40587) * 86400000).toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }

  function showTip(evt, html) {
    var rect = box.getBoundingClientRect();
    tip.innerHTML = html;
    tip.style.display = "block";
    tip.style.left = (evt.clientX - rect.left + 12) + "px";
    tip.style.top = (evt.clientY - rect.top + 12) + "px";
  }

  function hideTip() { tip.style.display = "none"; }

  function drawLegend(svg) {
      var legend = el("g", {"font-size": "12"}, svg), lx = PAD.l + 8, ly = 12;
      Object.keys(BANDS).forEach(function (fid) {
        var present = data.detections.some(function (d) { return String(d.fid) === fid; }) ||
          data.non_detections.some(function (n) { return String(n.fid) === fid; });
        if (!present) { return; }
        var item = el("g", {"class": "band-toggle", "data-fid": fid}, legend);
        item.style.cursor = "pointer";
        el("rect", {x: lx - 7, y: ly - 9, width: 30, height: 18, fill: "transparent"}, item);
        el("title", {}, item).textContent = "click to " + (hidden[fid] ? "show" : "hide") + " band " + BANDS[fid].name;
        el("circle", {cx: lx, cy: ly, r: 4, fill: hidden[fid] ? "#fff" : BANDS[fid].colour, stroke: BANDS[fid].colour}, item);
        el("text", {x: lx + 8, y: ly + 4, fill: hidden[fid] ? "#9aa3b2" : "#1d2430",
          "text-decoration": hidden[fid] ? "line-through" : "none"}, item).textContent = BANDS[fid].name;
        item.addEventListener("click", function () { hidden[fid] = !hidden[fid]; hideTip(); draw(); });
        lx += 34;
      });
      el("circle", {cx: lx, cy: ly, r: 4, fill: "#fff", stroke: "#5b6575", "stroke-width": 1.6}, legend);
      el("text", {x: lx + 8, y: ly + 4, fill: "#1d2430"}, legend).textContent = "dubious (hollow)";
      lx += 122;
      el("circle", {cx: lx, cy: ly, r: 5, fill: "#5b6575", stroke: "#16213a", "stroke-width": 1.8}, legend);
      el("text", {x: lx + 8, y: ly + 4, fill: "#1d2430"}, legend).textContent = "has stamps";
      lx += 92;
      el("path", {d: "M" + (lx - 4) + "," + (ly - 3) + "L" + (lx + 4) + "," + (ly - 3) + "L" + lx + "," + (ly + 4) + "Z",
        fill: "#5b6575", opacity: 0.5}, legend);
      el("text", {x: lx + 8, y: ly + 4, fill: "#1d2430"}, legend).textContent = "upper limit (5σ)";
  }

  function draw() {
    var s = state(), p = points(s);
    box.innerHTML = "";
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "light curve of " + data.oid}, box);
    drawLegend(svg);
    var all = p.dets.concat(p.limits);
    if (!all.length) {
      el("text", {x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#5b6575"}, svg).textContent =
        s.mode === "corrected" ? "No corrected magnitudes for this object (see the correction step)." : "No detections.";
      box.dataset.ready = "1"; box.dataset.points = "0";
      return;
    }
    var xs = all.map(function (q) { return q.x; });
    var ms = p.dets.map(function (q) { return q.mag + (q.err || 0); }).concat(p.dets.map(function (q) { return q.mag - (q.err || 0); }))
      .concat(p.limits.map(function (q) { return q.mag; }));
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var m0 = Math.min.apply(null, ms), m1 = Math.max.apply(null, ms);
    var dx = (x1 - x0) || 1, dm = (m1 - m0) || 0.5;
    x0 -= dx * 0.03; x1 += dx * 0.03; m0 -= dm * 0.08; m1 += dm * 0.08;
    if (s.fold) { x0 = -0.03; x1 = 2.03; }  // two full cycles
    var X = function (v) { return PAD.l + (W - PAD.l - PAD.r) * (v - x0) / (x1 - x0); };
    var Y = function (m) { return PAD.t + (H - PAD.t - PAD.b) * (m - m0) / (m1 - m0); };  // brighter up

    var axes = el("g", {"font-size": "12", fill: "#5b6575"}, svg);
    ticks(x0, x1, 8).forEach(function (v) {
      el("line", {x1: X(v), x2: X(v), y1: PAD.t, y2: H - PAD.b, stroke: "#eef1f5"}, axes);
      el("text", {x: X(v), y: H - PAD.b + 16, "text-anchor": "middle"}, axes).textContent = s.fold ? v.toFixed(2) : v.toFixed(0);
    });
    ticks(m0, m1, 6).forEach(function (v) {
      el("line", {x1: PAD.l, x2: W - PAD.r, y1: Y(v), y2: Y(v), stroke: "#eef1f5"}, axes);
      el("text", {x: PAD.l - 6, y: Y(v) + 4, "text-anchor": "end"}, axes).textContent = v.toFixed(1);
    });
    el("rect", {x: PAD.l, y: PAD.t, width: W - PAD.l - PAD.r, height: H - PAD.t - PAD.b, fill: "none", stroke: "#c5ccd8"}, axes);
    el("text", {x: (W + PAD.l) / 2, y: H - 8, "text-anchor": "middle"}, axes).textContent =
      s.fold ? "phase (period " + data.period.toFixed(5) + " d)" : "MJD";
    el("text", {x: 14, y: (H - PAD.b) / 2, transform: "rotate(-90 14 " + (H - PAD.b) / 2 + ")", "text-anchor": "middle"}, axes)
      .textContent = (s.mode === "corrected" ? "corrected" : "difference") + " magnitude";

    var layer = el("g", {}, svg);
    p.limits.forEach(function (q) {
      var b = BANDS[q.n.fid] || BANDS[1], cx = X(q.x), cy = Y(q.mag);
      var tri = el("path", {d: "M" + (cx - 4) + "," + (cy - 3) + "L" + (cx + 4) + "," + (cy - 3) + "L" + cx + "," + (cy + 4) + "Z",
        fill: b.colour, opacity: 0.35, "class": "limit"}, layer);
      tri.addEventListener("mousemove", function (e) { showTip(e, b.name + " upper limit " + q.mag.toFixed(2) + "<br>MJD " + q.x.toFixed(5) + "<br>" + isoDate(q.x)); });
      tri.addEventListener("mouseleave", hideTip);
    });
    p.dets.forEach(function (q) {
      var b = BANDS[q.d.fid] || BANDS[1], cx = X(q.x), cy = Y(q.mag);
      if (q.err) {
        el("line", {x1: cx, x2: cx, y1: Y(q.mag - q.err), y2: Y(q.mag + q.err), stroke: b.colour, "stroke-width": 1.2}, layer);
      }
      var dot = el("circle", {cx: cx, cy: cy, r: q.d.has_stamp ? 5 : 4, "class": "detection" + (q.d.dubious ? " dubious" : ""),
        fill: q.d.dubious ? "#fff" : b.colour, stroke: q.d.has_stamp ? "#16213a" : b.colour,
        "stroke-width": q.d.dubious || q.d.has_stamp ? 1.8 : 1}, layer);
      dot.style.cursor = q.d.has_stamp ? "pointer" : "default";
      dot.addEventListener("mousemove", function (e) {
        showTip(e, b.name + " " + q.mag.toFixed(3) + " ± " + (q.err || 0).toFixed(3) + "<br>MJD " + q.d.mjd.toFixed(5) + " (" + isoDate(q.d.mjd) + ")" +
          "<br>candid " + q.d.candid + (q.d.dubious ? "<br><b>dubious correction</b>" : "") +
          (q.d.isdiffpos < 0 ? "<br>negative difference" : "") + (q.d.has_stamp ? "<br>click: show stamps" : ""));
      });
      dot.addEventListener("mouseleave", hideTip);
      if (q.d.has_stamp) { dot.addEventListener("click", function () { showStamps(q.d.candid); }); }
    });

    box.dataset.ready = "1";
    box.dataset.points = String(p.dets.length);
  }

  function stampUrl(candid, type, format, stretch) {
    return "/get_stamp?oid=" + encodeURIComponent(data.oid) + "&candid=" + candid + "&type=" + type + "&format=" + format +
      (stretch ? "&stretch=" + stretch : "");
  }

  function showStamps(candid) {
    var select = document.getElementById("stamp-candid");
    if (!select) { return; }
    if (candid) { select.value = candid; }
    var stretch = document.getElementById("stamp-stretch").value;
    document.querySelectorAll(".stamps img").forEach(function (img) {
      img.src = stampUrl(select.value, img.dataset.type, "png", stretch);
    });
    document.querySelectorAll(".fits-link").forEach(function (a) { a.href = stampUrl(select.value, a.dataset.type, "fits"); });
    var avro = document.getElementById("stamp-avro");
    if (avro) { avro.href = "/get_avro?oid=" + encodeURIComponent(data.oid) + "&candid=" + select.value; }
  }

  document.querySelectorAll("input[name=lcmode], #lc-limits, #lc-fold").forEach(function (input) {
    input.addEventListener("change", draw);
  });
  ["stamp-candid", "stamp-stretch"].forEach(function (id) {
    var node = document.getElementById(id);
    if (node) { node.addEventListener("change", function () { showStamps(); }); }
  });
  draw();
})();
