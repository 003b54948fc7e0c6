/* #examples/<layer>/<channel> leads to the channel on its page; a link to nothing says so. */
(function () {
  var data = JSON.parse(document.getElementById("example-links").textContent);
  function follow() {
    var hash = decodeURIComponent(location.hash.slice(1));
    if (hash.indexOf("examples/") !== 0) return;
    var rest = hash.slice("examples/".length), cut = rest.lastIndexOf("/");
    var layer = rest.slice(0, cut), text = rest.slice(cut + 1), channel = Number(text);
    var entry = data.layers[layer], note = document.getElementById("link-note");
    if (cut < 0 || !entry || !/^[0-9]+$/.test(text) || channel >= entry.channels) {
      note.textContent = "The link #" + hash + " names no layer or channel with dataset examples.";
      note.hidden = false;
      return;
    }
    var page = entry.prefix + "-" + String(Math.floor(channel / data.per_page) + 1).padStart(4, "0") + ".html";
    var here = location.pathname.split("/").pop();
    if (data.base || here !== page) location.replace(data.base + page + "#examples/" + layer + "/" + channel);
  }
  window.addEventListener("hashchange", follow);
  follow();
})();
