// Renders the book's mermaid diagrams (<pre class="mermaid">, produced by mdbook-mermaid) with
// the vendored mermaid.min.js, in a palette matching the current mdBook theme. mdBook switches
// themes by changing the class of <html>; mermaid cannot restyle a rendered diagram, so a switch
// between a light and a dark theme re-renders from the saved source.
(() => {
    const DARK = ['coal', 'navy', 'ayu'];
    const html = document.documentElement;
    const isDark = () => DARK.some((t) => html.classList.contains(t));
    const diagrams = Array.from(document.querySelectorAll('pre.mermaid'));
    if (diagrams.length === 0) {
        return;
    }
    const sources = diagrams.map((d) => d.textContent);
    let renderedDark = null;

    async function render() {
        const dark = isDark();
        if (dark === renderedDark) {
            return;
        }
        renderedDark = dark;
        diagrams.forEach((d, i) => {
            d.removeAttribute('data-processed');
            d.textContent = sources[i];
        });
        mermaid.initialize({ startOnLoad: false, theme: dark ? 'dark' : 'default', securityLevel: 'strict' });
        await mermaid.run({ nodes: diagrams });
    }

    new MutationObserver(() => { render(); }).observe(html, { attributes: true, attributeFilter: ['class'] });
    render();
})();
