// The page's styles, adopted from script: the listener's CSP allows scripts from the page's
// own origin only, so neither inline <style> nor style attributes are used.
const css = `
:root { font-family: system-ui, sans-serif; color: #1d2330; background: #f5f6f8; }
body { margin: 0 auto; max-width: 44rem; padding: 1rem 1.5rem; }
header { display: flex; align-items: center; justify-content: space-between; }
h1 { font-size: 1.4rem; margin: 0.5rem 0; }
h2 { font-size: 1.05rem; margin: 1.2rem 0 0.5rem; }
form { display: flex; gap: 0.5rem; flex-wrap: wrap; }
input, select, button { font: inherit; padding: 0.35rem 0.6rem; border: 1px solid #b8bfcc; border-radius: 6px; background: white; }
input { flex: 1 1 12rem; }
button { cursor: pointer; background: #2a5bd7; color: white; border-color: #2a5bd7; }
button.remove, #leave { background: white; color: #2a5bd7; }
#connection { padding: 0.2rem 0.7rem; border-radius: 999px; font-size: 0.85rem; background: #d9dce3; }
#connection[data-state="connected"] { background: #c9f0d4; color: #135c2b; }
#connection[data-state="connecting"], #connection[data-state="waiting"] { background: #fbe7b5; color: #6b4a00; }
#connection[data-state="failed"] { background: #f8c9c9; color: #7a1111; }
ul#watched { list-style: none; padding: 0; margin: 0.8rem 0; }
ul#watched li { display: flex; align-items: center; gap: 0.7rem; padding: 0.5rem 0.7rem; margin-bottom: 0.4rem; background: white; border-radius: 8px; border: 1px solid #e1e4ea; }
li .user { font-weight: 600; min-width: 6rem; }
li .detail { flex: 1; color: #5a6272; font-size: 0.9rem; }
.status { padding: 0.1rem 0.6rem; border-radius: 999px; font-size: 0.85rem; background: #d9dce3; color: #3b4150; }
.status[data-status="online"] { background: #c9f0d4; color: #135c2b; }
.status[data-status="away"] { background: #fbe7b5; color: #6b4a00; }
.status[data-status="busy"] { background: #f8c9c9; color: #7a1111; }
.status[data-status="invisible"] { background: #e3d9f5; color: #3d2370; }
#log { font-size: 0.8rem; color: #5a6272; max-height: 10rem; overflow-y: auto; }
[hidden] { display: none !important; }
`;

export function applyStyles(doc: Document): void {
  const sheet = new CSSStyleSheet();
  sheet.replaceSync(css);
  doc.adoptedStyleSheets = [...doc.adoptedStyleSheets, sheet];
}
