// pneumo web page: upload one image to /api/v1/predict and show the result.
(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("upload-form"), input = $("file"), drop = $("drop"), submit = $("submit");
  let chosen = null;

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = false;
  }

  function choose(file) {
    chosen = file || null;
    $("error").hidden = true;
    $("drop-text").textContent = chosen ? chosen.name + " (" + Math.ceil(chosen.size / 1024) + " KB)" : "Drop a chest X-ray here";
    submit.disabled = !chosen;
  }

  input.addEventListener("change", () => choose(input.files[0]));
  ["dragenter", "dragover"].forEach((ev) => drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => choose(e.dataTransfer.files[0]));

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!chosen) return;
    submit.disabled = true;
    submit.textContent = "Classifying…";
    $("error").hidden = true;
    const body = new FormData();
    body.append("file", chosen, chosen.name);
    body.append("heatmap", $("heatmap").checked ? "true" : "false");
    const headers = {};
    if ($("api-key") && $("api-key").value) headers["X-API-Key"] = $("api-key").value;
    try {
      const resp = await fetch("/api/v1/predict", { method: "POST", body, headers });
      let data = null;
      try { data = await resp.json(); } catch (_) { /* non-JSON error page */ }
      if (!resp.ok) {
        showError((data && data.message) || ("The server answered " + resp.status + "."));
        $("result").hidden = true;
        return;
      }
      render(data);
    } catch (err) {
      showError("Could not reach the server: " + err.message);
    } finally {
      submit.disabled = false;
      submit.textContent = "Classify";
    }
  });

  function render(data) {
    const r = data.results[0];
    $("label").textContent = r.label;
    $("label").className = "label " + r.label;
    $("probability").textContent = r.probability.toFixed(3);
    $("threshold").textContent = r.threshold.toFixed(3);
    $("bar-fill").style.width = (100 * r.probability).toFixed(1) + "%";
    $("bar-thr").style.left = (100 * r.threshold).toFixed(1) + "%";
    const foreign = r.out_of_distribution === true;
    $("ood").hidden = !foreign;
    $("result").classList.toggle("foreign", foreign);
    $("ood-score").textContent = r.ood_score == null ? "" : `(more unusual than ${r.ood_score.toFixed(1)}% of its validation X-rays)`;
    const warnings = $("warnings");
    warnings.innerHTML = "";
    r.warnings.forEach((w) => { const li = document.createElement("li"); li.textContent = w; warnings.appendChild(li); });
    const reader = new FileReader();
    reader.onload = () => { $("preview").src = reader.result; };
    if (/\.(dcm|dicom)$/i.test(chosen.name)) { $("preview").removeAttribute("src"); } else { reader.readAsDataURL(chosen); }
    if (r.heatmap_png_base64) {
      $("overlay").src = "data:image/png;base64," + r.heatmap_png_base64;
      $("heatmap-fig").hidden = false;
    } else {
      $("heatmap-fig").hidden = true;
    }
    $("meta").textContent = "Model " + data.model.name + " " + data.model.version + " · backend " + data.model.backend +
      " · " + data.elapsed_ms.toFixed(0) + " ms · request " + data.request_id;
    $("result").hidden = false;
  }
})();
