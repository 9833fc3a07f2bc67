// rkvideo: seek the recording's player to a moment without reloading the page.
// Without JavaScript every moment and frame is a link to the same page with ?t=SECONDS,
// and the video starts there through its media fragment (#t=SECONDS).
(function () {
  "use strict";
  var player = document.getElementById("player");
  if (!player) {
    return;
  }

  function play() {
    var started = player.play();
    if (started && started.catch) {
      // A browser that refuses to play with sound before a click may still play muted.
      started.catch(function () {
        player.muted = true;
        player.play().catch(function () {});
      });
    }
  }

  function seek(seconds) {
    if (!isFinite(seconds) || seconds < 0) {
      return;
    }
    var go = function () {
      player.currentTime = seconds;
      play();
    };
    if (player.readyState >= 1) {
      go();
    } else {
      player.addEventListener("loadedmetadata", go, { once: true });
    }
  }

  function markCurrent() {
    var now = player.currentTime;
    var items = document.querySelectorAll(".events li[data-start]");
    for (var i = 0; i < items.length; i++) {
      var start = parseFloat(items[i].dataset.start);
      var end = parseFloat(items[i].dataset.end);
      items[i].classList.toggle("now", now >= start && now < end);
    }
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a.seek") : null;
    if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) {
      return;
    }
    event.preventDefault();
    seek(parseFloat(link.dataset.start));
    history.replaceState(null, "", link.href);
    player.scrollIntoView({ block: "nearest" });
  });

  player.addEventListener("timeupdate", markCurrent);
  // Arrived from a moment or a frame (?t=SECONDS, or #t=SECONDS as notification links have it): play
  // from there.
  var fragment = /^#t=(\d+(?:\.\d+)?)$/.exec(window.location.hash);
  if (player.dataset.start !== "") {
    seek(parseFloat(player.dataset.start));
  } else if (fragment) {
    seek(parseFloat(fragment[1]));
  }
})();
