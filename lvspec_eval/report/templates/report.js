(function () {
  var run = document.getElementById('f-run'), diff = document.getElementById('f-diff');
  var count = document.getElementById('f-count'), items = document.querySelectorAll('details.sample');
  function apply() {
    var shown = 0;
    items.forEach(function (e) {
      var ok = (!run.value || e.dataset.run === run.value) && (!diff.checked || e.dataset.differs === '1');
      e.hidden = !ok; if (ok) { shown++; }
    });
    count.textContent = shown + ' of ' + items.length + ' samples shown';
  }
  function openAll(open) { items.forEach(function (e) { if (!e.hidden) { e.open = open; } }); }
  run.addEventListener('change', apply); diff.addEventListener('change', apply);
  document.getElementById('f-open').addEventListener('click', function () { openAll(true); });
  document.getElementById('f-close').addEventListener('click', function () { openAll(false); });
  apply();
})();
