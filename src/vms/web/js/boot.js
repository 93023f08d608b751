// Runs before the first paint (a classic script in <head>, not a module): the theme and the
// language the user chose last time, so the page does not flash the other theme first.
// Everything else waits for app.js.
(function () {
  var root = document.documentElement;
  try {
    var theme = localStorage.getItem("vms.theme");
    if (theme === "light" || theme === "dark") root.dataset.theme = theme;
    var lang = localStorage.getItem("vms.lang");
    if (lang === "en" || lang === "pt-BR") root.lang = lang;
  } catch (e) {
    // Storage refused (private mode, policy): the system theme and the browser's language.
  }
})();
