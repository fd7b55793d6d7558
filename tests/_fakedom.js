// Runs the dashboard's script (the file named by argv[2]) in node against a
// minimal stand-in DOM, with the status read from stdin as the answer to its
// first poll of api/status, then prints the elements whose ids follow in
// argv as JSON: {id: {hidden, className, text, children, body}} (body: the
// rows of a table's first tBody).
// Used by tests.test_dashboard where no browser is at hand; the real browser
// test is tests.test_dashboard_browser.
"use strict";
var fs = require("fs");

function Element(tag) {
  this.tag = tag;
  this.children = [];
  this.dataset = {};
  this.hidden = false;
  this.className = "";
  this.ownText = "";
  this.classList = { add: function () {}, remove: function () {} };
  this.rows = [];
  this.cells = [];
  this.tBodies = [];
  this.tHead = null;
}
Object.defineProperty(Element.prototype, "textContent", {
  get: function () {
    return this.ownText + this.children.map(function (c) { return c.textContent; }).join("");
  },
  set: function (value) { this.ownText = String(value); this.children = []; }
});
Element.prototype.appendChild = function (child) { this.children.push(child); return child; };
Element.prototype.setAttribute = function () {};
Element.prototype.addEventListener = function () {};
Element.prototype.focus = function () {};
Element.prototype.showModal = function () {};
Element.prototype.close = function () {};
Element.prototype.deleteCell = function () { this.cells.pop(); };
Element.prototype.querySelector = function () { return new Element("span"); };

var byId = {};
global.document = {
  body: new Element("body"),
  documentElement: new Element("html"),
  title: "",
  createElement: function (tag) { return new Element(tag); },
  getElementById: function (id) {
    if (!byId[id]) {
      var node = new Element("div");
      node.tBodies = [new Element("tbody")];
      node.tHead = new Element("thead");
      node.tHead.rows = [new Element("tr")];
      byId[id] = node;
    }
    return byId[id];
  }
};
global.getComputedStyle = function () { return { getPropertyValue: function () { return "#000"; } }; };
global.sessionStorage = { getItem: function () { return null; }, setItem: function () {}, removeItem: function () {} };
global.setInterval = function () { return 0; };
global.setTimeout = function () { return 0; };
global.clearTimeout = function () {};
var status = JSON.parse(fs.readFileSync(0, "utf8"));
global.fetch = function () {
  return Promise.resolve({ ok: true, status: 200, json: function () { return Promise.resolve(status); } });
};

function dump(node) {
  return {
    hidden: node.hidden,
    className: node.className,
    text: node.textContent,
    children: node.children.map(dump),
    body: node.tBodies.length ? node.tBodies[0].children.map(dump) : []
  };
}

new Function(fs.readFileSync(process.argv[2], "utf8"))();
setImmediate(function () {
  var out = {};
  process.argv.slice(3).forEach(function (id) { out[id] = dump(document.getElementById(id)); });
  process.stdout.write(JSON.stringify(out));
});
