"""Build the documentation site and README.md from the notebooks in nbs/ (`make docs`, `synthsae docs`).

The notebooks are the documentation, and nbdev does the work wherever it provides it:

1. **Execute** each notebook with nbdev's executor, execnb's `CaptureShell`, skipping what `nbdev_test` skips
   (cells flagged with `tst_flags` of settings.ini, `#| eval: false`, the `nbdev_export()` call); skipped
   cells keep their stored outputs. `--execute false` uses the stored outputs instead (as `nbdev_docs` does).
2. **Process** them with nbdev's own processors (`nbdev.processors.FilterDefaults`, what `nbdev_proc_nbs` and
   `nbdev_docs` apply): the title cell becomes front matter, exported names get their `show_doc`, hidden and
   exported cells and `## … -` headings go, backticked names link to their pages. The sidebar is
   `nbdev_sidebar`'s.
3. **Render** with Quarto when it is on the PATH (the top-level `_quarto.yml`, nbdev's sidebar). Without it,
   pandoc (bundled by pypandoc-binary) writes one self-contained page per notebook: figures as data URIs, math
   as MathML, no scripts and no CDN. This fallback is all that is our own: it applies the Quarto cell options
   that nbdev's processed notebooks carry (`echo`, `output`, `include`), drops outputs a static page cannot
   show (widgets, scripts, progress-bar redraws), and points links to the site at the local pages.

The site is written atomically, and a notebook that fails to execute is named while the rest are still built.
README.md is the processed `nbs/index.ipynb` as GitHub Markdown (Quarto's `gfm`, as `nbdev_readme` does, or
pandoc's), its figures under docs_assets/.
"""
from __future__ import annotations
import base64, contextlib, copy, io, json, posixpath, re, shutil, subprocess, sys, tempfile
from pathlib import Path
from typing import NamedTuple
from fastcore.script import call_parse, Param, bool_arg
from fastcore.xtras import working_directory
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from nbdev.config import get_config
from nbdev.processors import FilterDefaults
from nbdev.quarto import nbdev_sidebar
from synthsae.core import atomic_directory, atomic_file

ROOT = Path(__file__).resolve().parent.parent   # the checkout: settings.ini, nbs/, _quarto.yml


def _text(s)->str: return ''.join(s) if isinstance(s, list) else (s or '')

def _config():
    "This project's nbdev settings (settings.ini at the checkout's root)"
    return get_config(path=ROOT)

def skip_flags()->tuple:
    "The `tst_flags` of settings.ini: cells with these directives are not executed, as under `nbdev_test`"
    return tuple(_config().get('tst_flags', '').split())


# ## 1. Executing a notebook

def _skip(cell, flags)->bool:
    "What `nbdev_test` does not run (its `_no_eval`)"
    if cell.cell_type != 'code': return True
    if 'nbdev_export' + '(' in cell.source: return True
    d = getattr(cell, 'directives_', {}) or {}
    return d.get('eval:', [''])[0].lower() == 'false' or bool(set(flags) & d.keys())

def _error_message(e:BaseException, shell:CaptureShell|None=None)->str:
    where = f'cell [{shell._cell_idx}]: ' if shell is not None and getattr(shell, '_cell_idx', None) else ''
    return f'{where}{type(e).__name__}: {e}'.strip()

def execute_notebook(
    src:str|Path,                  # the notebook to run
    dst:str|Path,                  # where the executed notebook is written (also when it fails)
    flags:tuple=('slow', 'gpu'),   # cells with these directives are not run
    timeout:int|None=600,          # seconds allowed per cell
)->str|None:                       # None when every cell ran, else the error
    "Run `src` in its folder with nbdev's executor, skipping what `nbdev_test` skips; outputs end at an error"
    from nbdev.process import NBProcessor
    src = Path(src).resolve()
    nb = NBProcessor(src, rm_directives=False).nb       # cells carry their `directives_`
    shell, err = CaptureShell(src, timeout=timeout), None
    with working_directory(src.parent):
        try: shell.run_all(nb, exc_stop=True, preproc=lambda c: _skip(c, flags))
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt) and not isinstance(shell.exc, KeyboardInterrupt): raise
            err = _error_message(e, shell)
    for c in nb.cells: c.pop('directives_', None)
    write_nb(nb, dst)
    return err


# ## 2. nbdev's processing

def process_notebook(
    path:str|Path,             # an (executed) notebook; its file name gives the page name
)->dict:                       # the processed notebook (JSON-ready), its front matter in metadata['frontmatter']
    "The notebook as nbdev prepares it for its page (`FilterDefaults`, the processors of `nbdev_proc_nbs`)"
    nb = read_nb(path)
    with working_directory(ROOT): FilterDefaults()(nb)
    fm = dict(getattr(nb, 'frontmatter_', {}) or {})
    keep = ('cell_type', 'metadata', 'source', 'outputs', 'execution_count', 'id', 'attachments')
    cells = [{k: c[k] for k in keep if k in c} for c in nb.cells if c.get('source') is not None]
    d = json.loads(json.dumps(dict(nbformat=nb.get('nbformat', 4), nbformat_minor=nb.get('nbformat_minor', 5), cells=cells,
                                   metadata={**nb.get('metadata', {}), 'frontmatter': fm}), default=str))
    for c in d['cells']: c['source'] = _text(c['source'])
    return d

def _nbdev_name(nb_file:str)->str:
    "nbdev's page name of a notebook: '00_core.ipynb' → 'core.html' (its `_nbpath2html`)"
    return re.sub(r'^\d+[a-zA-Z0-9]*_', '', posixpath.basename(nb_file).lower()).rsplit('.', 1)[0] + '.html'

def rename_page(nb:dict, output_file:str)->dict:
    "`nb` with another `output-file` in its front matter (both nbdev's raw cell and the metadata)"
    import yaml
    fm = {**nb['metadata'].get('frontmatter', {}), 'output-file': output_file}
    cells = [dict(c, source=f"---\n{yaml.safe_dump(fm, sort_keys=False, allow_unicode=True)}---") if c['cell_type'] == 'raw' and i == 0 else c
             for i, c in enumerate(nb['cells'])]
    return {**nb, 'cells': cells, 'metadata': {**nb['metadata'], 'frontmatter': fm}}

def _front(nb:dict, name:str)->tuple[str, str, str]:
    "(title, description, output file) from nbdev's front matter"
    fm = nb['metadata'].get('frontmatter', {})
    return fm.get('title') or name, fm.get('description', ''), fm.get('output-file') or f'{name}.html'


# ## The pages and the sidebar

class DocPage(NamedTuple):
    "One page of the site"
    src:Path|None   # the notebook (None for a page copied as it is, such as the reproduction report)
    href:str        # the page's path inside the site, e.g. 'core.html' (nbdev's name) or 'reports/report.html'
    title:str       # sidebar and page title
    section:str=''  # sidebar section ('' for the top level)

def doc_notebooks(nbs_path:str|Path='nbs')->list[Path]:
    "The notebooks that become pages, in nbdev's sidebar order (index first; `_` and `.` files and folders skipped)"
    root = Path(nbs_path)
    if not root.is_dir(): raise FileNotFoundError(f"notebook folder not found: {root}")
    import yaml
    buf = io.StringIO()
    with working_directory(ROOT), contextlib.redirect_stdout(buf): nbdev_sidebar.__wrapped__(path=str(root.resolve()), printit=True, force=True)
    contents, out = yaml.safe_load(buf.getvalue())['website']['sidebar']['contents'], []
    def walk(items):
        for it in items:
            if isinstance(it, str): out.append(root/it)
            else:
                if it.get('href'): out.append(root/it['href'])
                walk(it.get('contents', []))
    walk(contents)
    return [p for p in out if p.suffix == '.ipynb']


# ## 3a. Quarto

def quarto_sidebar(pages:list[DocPage])->list:
    "The `website.sidebar.contents` of `_quarto.yml`: notebooks by path (Quarto reads their titles), other pages as links"
    items, sections = [], {}
    for p in pages:
        item = p.src.name if p.src is not None and not p.section else (
            f'{p.section}/{p.src.name}' if p.src is not None else dict(text=p.title, href=p.href))
        if not p.section: items.append(item)
        else:
            if p.section not in sections: sections[p.section] = dict(section=p.section, contents=[]); items.append(sections[p.section])
            sections[p.section]['contents'].append(item)
    return items

def _render_quarto(site:list[DocPage], prepared:dict, proj:Path, dst:Path, config:Path):
    "Render the processed notebooks with Quarto, laid out as `nbdev_docs` lays out its `_proc` folder"
    import yaml
    for p in site:
        if p.src is None: continue
        f = proj/(f'{p.section}/' if p.section else '')/p.src.name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(prepared[p.href]))   # nbdev's processed notebook, front matter first
    cfg = yaml.safe_load(config.read_text())
    cfg.setdefault('website', {}).setdefault('sidebar', {})['contents'] = quarto_sidebar(site)
    cfg.setdefault('project', {})['output-dir'] = '_site'
    (proj/'_quarto.yml').write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    r = subprocess.run(['quarto', 'render', str(proj), '--no-cache'], capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f"quarto render failed ({r.returncode}):\n{(r.stdout + r.stderr)[-4000:]}")
    shutil.copytree(proj/'_site', dst, dirs_exist_ok=True)


# ## 3b. The pandoc fallback

_WIDGET = 'application/vnd.jupyter.widget-view+json'
_NO_STATIC = {_WIDGET, 'application/vnd.jupyter.widget-state+json', 'application/javascript'}
_re_ansi = re.compile(r'\x1b\[[0-9;?]*[ -/]*[@-~]')
_re_option = re.compile(r'^\s*#\s*\|\s*([\w-]+)\s*:\s*(.*?)\s*$')

def _plain(s:str)->str:
    "No ANSI codes; of each `\\r`-rewritten line only the final state"
    return '\n'.join(l.rsplit('\r', 1)[-1] for l in _re_ansi.sub('', s).split('\n'))

def static_outputs(outputs:list)->list:
    "The outputs a static page can show: no widgets or scripts, progress bars at their final state"
    res = []
    for o in copy.deepcopy(outputs):
        kind = o['output_type']
        if kind == 'stream': o['text'] = _plain(_text(o['text']))
        elif kind == 'error': o['traceback'] = [_plain(t) for t in o.get('traceback', [])]
        else:
            d = {k: v for k, v in o.get('data', {}).items() if k not in _NO_STATIC}
            if _WIDGET in o.get('data', {}): d.pop('text/plain', None)
            if '<script' in _text(d.get('text/html')).lower(): d.pop('text/html')
            o['data'] = d
        if kind == 'execute_result': o['execution_count'] = o.get('execution_count') or 0  # pandoc's reader needs one
        if (o['text'].strip() if kind == 'stream' else kind == 'error' or o['data']): res.append(o)
    return res

def _md(s:str)->dict: return dict(cell_type='markdown', metadata={}, source=s)

_re_link_attrs = re.compile(r'(\]\([^)\s]*\))\{[^}\n]*\}')

def _markdown_outputs(outputs:list)->tuple[list, list]:
    "Outputs with a `text/markdown` form become markdown cells, as Quarto renders them (`show_doc` among them)"
    md = [_md(_re_link_attrs.sub(r'\1', _text(o['data']['text/markdown']))) for o in outputs if 'text/markdown' in o.get('data', {})]
    return [o for o in outputs if 'text/markdown' not in o.get('data', {})], md

def quarto_options(nb:dict)->dict:
    "What Quarto does with a processed notebook: front matter out, cell options (`echo`, `output`, `include`) applied"
    cells = []
    for c in copy.deepcopy(nb['cells']):
        if c['cell_type'] == 'raw': continue   # nbdev's front matter: the page's title and description
        if c['cell_type'] != 'code':
            cells.append(c)
            continue
        lines, opts = _text(c['source']).splitlines(), {}
        while lines and (m := _re_option.match(lines[0])): opts[m.group(1)] = m.group(2).lower(); lines.pop(0)
        if opts.get('include') == 'false': continue
        c['source'] = '' if opts.get('echo') == 'false' else '\n'.join(lines).strip()
        outputs, md = _markdown_outputs([] if opts.get('output') == 'false' else static_outputs(c.get('outputs', [])))
        c['outputs'] = outputs
        cells += ([c] if c['source'] or c['outputs'] else []) + md
    return {**nb, 'cells': cells}

_re_nb_target = re.compile(r'\]\((?![a-z][a-z0-9+.-]*:|/|#)([^)\s#]+\.ipynb)(#[^)\s]*)?\)', re.I)

def _local_links(nb:dict, page:DocPage, site:list[DocPage])->dict:
    "Links into the published site (nbdev's `add_links`) and to other notebooks pointed at the local pages"
    cfg = _config()
    url = f"{cfg.get('doc_host', '').rstrip('/')}{cfg.get('doc_baseurl', '')}".rstrip('/') + '/'
    here = posixpath.dirname(page.href) or '.'
    text = json.dumps(nb)
    nb = json.loads(text.replace(json.dumps(url)[1:-1], '../' * page.href.count('/')) if url != '/' else text)
    hrefs = {p.src.resolve(): p.href for p in site if p.src is not None}
    def target(m):   # a notebook outside this build gets nbdev's page name for it
        nb_file = m.group(1)
        h = hrefs.get((page.src.parent/nb_file).resolve()) or posixpath.join(posixpath.dirname(nb_file), _nbdev_name(nb_file))
        return '](' + posixpath.relpath(h, here) + (m.group(2) or '') + ')'
    for c in nb['cells']:
        if c['cell_type'] == 'markdown': c['source'] = _re_nb_target.sub(target, _text(c['source']))
    return nb

_TEMPLATE = r'''<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="tools/docs.py (nbdev processing, pandoc)">
<title>$pagetitle$$if(sitetitle)$ – $sitetitle$$endif$</title>
<style>
$styles.html()$
</style>
$for(header-includes)$
$header-includes$
$endfor$
</head>
<body>
<nav class="sidebar" aria-label="Pages">
$for(include-before)$
$include-before$
$endfor$
$if(toc)$
<div class="page-toc"><p class="toc-title">On this page</p>
$table-of-contents$
</div>
$endif$
</nav>
<main>
<header>
<h1 class="title">$title$</h1>
$if(subtitle)$
<p class="subtitle">$subtitle$</p>
$endif$
</header>
$body$
</main>
</body>
</html>
'''

_LUA = r'''
function Link(el)
  if not el.target:match('^%a+:') then
    el.target = el.target:gsub('%.ipynb$', '.html'):gsub('%.ipynb#', '.html#')
  end
  return el
end
function CodeBlock(el)
  if el.text:match('^%s*$') then return {} end
end
function RawBlock(el)
  if el.format == 'html' and el.text:match('^<!%-%-') then return {} end
end
'''

_CSS = (Path(__file__).parent/'docs.css').read_text() if (Path(__file__).parent/'docs.css').is_file() else ''

def _esc(s:str)->str: return s.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;').replace('"', '&quot;')

def nav_html(
    pages:list[DocPage],     # every page of the site, in order
    current:str,             # href of the page being written
    site_title:str='synthsae',
)->str:
    "The sidebar: the site title and one list per section, links relative to the current page"
    here = posixpath.dirname(current) or '.'
    rel = lambda h: posixpath.relpath(h, here)
    out, section = [f'<p class="site-title"><a href="{rel("index.html")}">{_esc(site_title)}</a></p>', '<ul>'], ''
    for p in pages:
        if p.section != section: out += ['</ul>', f'<p class="section">{_esc(p.section)}</p>', '<ul>']; section = p.section
        cur = ' aria-current="page"' if p.href == current else ''
        out.append(f'<li><a href="{rel(p.href)}"{cur}>{_esc(p.title)}</a></li>')
    return '\n'.join(out + ['</ul>'])

def render_page(
    nb:dict,                       # a notebook from `process_notebook`
    dst:str|Path,                  # the HTML file to write
    nav:str='',                    # sidebar HTML (`nav_html`)
    resource_path:str|Path='.',    # where images linked from markdown cells are found
    site_title:str='synthsae',
)->Path:
    "Write `nb` as one self-contained HTML page with pandoc"
    import pypandoc
    dst = Path(dst)
    title, desc, _ = _front(nb, dst.stem)
    page = quarto_options(nb)
    page['metadata'] = {k: v for k, v in nb['metadata'].items() if k in ('kernelspec', 'language_info')}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for name, text in [('page.html', _TEMPLATE), ('links.lua', _LUA), ('nav.html', nav), ('style.html', f'<style>\n{_CSS}</style>\n')]:
            (t/name).write_text(text)
        fields = dict(title=title, pagetitle=title, sitetitle=site_title) | ({'subtitle': desc} if desc else {})
        (t/'meta.json').write_text(json.dumps(fields))
        args = ['--standalone', '--embed-resources', '--mathml', '--toc', '--toc-depth=2', f'--template={t/"page.html"}',
                f'--lua-filter={t/"links.lua"}', f'--include-before-body={t/"nav.html"}', f'--include-in-header={t/"style.html"}',
                f'--resource-path={resource_path}', f'--metadata-file={t/"meta.json"}']
        dst.parent.mkdir(parents=True, exist_ok=True)
        pypandoc.convert_text(json.dumps(page), 'html', format='ipynb', outputfile=str(dst), extra_args=args)
    return dst

def _render_pandoc(site:list[DocPage], prepared:dict, dst:Path)->dict:
    failed = {}
    for p in site:
        if p.src is None: continue
        try: render_page(_local_links(prepared[p.href], p, site), dst/p.href, nav_html(site, p.href), resource_path=p.src.parent)
        except Exception as e: failed[str(p.src)] = f"pandoc: {_error_message(e)}"
    return failed


# ## The reproduction report

_re_ref = re.compile(r'''(?:src|href)\s*=\s*["']([^"'#?]+)''', re.I)

def copy_report(
    report:str|Path,   # the report's HTML file
    dst:str|Path,      # folder receiving it (e.g. `<site>/reports`)
)->list[Path]:         # the files copied
    "Copy `report` and the local files it links to into `dst`, keeping their relative paths"
    report, dst = Path(report), Path(dst)
    refs = {r for r in _re_ref.findall(report.read_text(errors='replace')) if not re.match(r'^[a-z][a-z0-9+.-]*:|^/', r, re.I)}
    copied = []
    for rel in [report.name] + sorted(refs):
        src = (report.parent/rel).resolve()
        if not src.is_file() or report.parent.resolve() not in src.parents: continue
        (dst/rel).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(src, dst/rel); copied.append(dst/rel)
    return copied


# ## Building the site

class DocsBuild(NamedTuple):
    "What `build_docs` wrote"
    out_dir:Path
    pages:list[DocPage]
    failed:dict[str, str]   # notebook -> why it failed to execute or render
    engine:str              # 'quarto' or 'pandoc'

def _progress(it, on:bool):
    if not on: return it
    from tqdm.auto import tqdm
    return tqdm(it, desc='docs', unit='notebook')

def _prepare(src:Path, nbs_path:Path, work:Path, execute:bool, timeout:int, flags)->tuple[dict, str|None]:
    "The notebook executed (when asked) and processed by nbdev; and the execution error"
    dst = work/src.resolve().relative_to(nbs_path.resolve())
    dst.parent.mkdir(parents=True, exist_ok=True)
    err = execute_notebook(src, dst, flags, timeout) if execute else None
    if not execute: shutil.copy2(src, dst)
    try: nb = process_notebook(dst)
    except Exception as e: return None, f'nbdev processing: {_error_message(e)}'
    if err:
        note = f'**This notebook failed to execute in the docs build** ({_esc(err)}); outputs end at the error.'
        nb['cells'].insert(1, _md(note))
    return nb, err

def build_docs(
    out_dir:str|Path='_docs',          # the site folder (replaced atomically)
    nbs:list|None=None,                # notebooks to include; None: every notebook under `nbs_path`
    execute:bool=True,                 # run the notebooks first (False: use their stored outputs)
    timeout:int=600,                   # seconds allowed per cell
    nbs_path:str|Path=ROOT/'nbs',      # notebook folder
    report:str|Path|None=ROOT/'reports'/'report.html',  # reproduction report to include when it exists
    engine:str='auto',                 # 'auto' (Quarto when on the PATH), 'quarto' or 'pandoc'
    config:str|Path=ROOT/'_quarto.yml',# Quarto project file
    progress:bool=True,                # show a progress bar over notebooks
)->DocsBuild:
    "Execute, process and render the notebooks as a site in `out_dir`; failures are listed, not raised"
    if engine not in ('auto', 'quarto', 'pandoc'): raise ValueError(f"engine must be one of 'auto', 'quarto', 'pandoc', got {engine!r}")
    if engine == 'auto': engine = 'quarto' if shutil.which('quarto') else 'pandoc'
    nbs_path = Path(nbs_path)
    notebooks = [Path(n) for n in nbs] if nbs is not None else doc_notebooks(nbs_path)
    for n in notebooks:
        if not n.is_file(): raise FileNotFoundError(f"notebook not found: {n}")
    report = Path(report) if report and Path(report).is_file() else None
    flags, failed, prepared, pages = skip_flags(), {}, {}, []
    with tempfile.TemporaryDirectory(prefix='synthsae-docs-') as work, atomic_directory(out_dir) as tmp:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the site from a web server
        for src in _progress(notebooks, progress):
            nb, err = _prepare(src, nbs_path, Path(work)/'run', execute, timeout, flags)
            if nb is None:
                failed[str(src)] = err
                continue
            rel = src.resolve().relative_to(nbs_path.resolve())
            section = rel.parent.as_posix() if len(rel.parts) > 1 else ''
            title, _, out_file = _front(nb, src.stem)
            if posixpath.join(section, out_file) in prepared:
                out_file = f'{src.stem}.html'   # nbdev names 31_probes and 76_probes both probes.html: the later keeps its number
                nb = rename_page(nb, out_file)
            pages.append(DocPage(src, posixpath.join(section, out_file), title, section))
            prepared[pages[-1].href] = nb
            if err: failed[str(src)] = err
        site = pages + ([DocPage(None, f'reports/{report.name}', 'Reproduction report', 'Reports')] if report else [])
        if report: copy_report(report, (Path(work)/'proj' if engine == 'quarto' else tmp)/'reports')
        if engine == 'quarto': _render_quarto(site, prepared, Path(work)/'proj', tmp, Path(config))
        else: failed |= _render_pandoc(site, prepared, tmp)
    return DocsBuild(Path(out_dir), site, failed, engine)


# ## README

_LUA_GFM = r'''
function Div(el) return el.content end
function CodeBlock(el)
  if el.text:match('^%s*$') then return {} end
  if #el.classes == 0 then el.classes = {'text'} end
  return el
end
'''
_re_nb_link = re.compile(r'\]\((?![a-z][a-z0-9+.-]*:|/|#)([^)\s]+\.ipynb(?:#[^)\s]*)?)\)', re.I)

def _figures_to_files(nb:dict, assets:str, stem:str)->tuple[dict, dict[str, bytes]]:
    "Each PNG output becomes a markdown image cell after its code cell; returns the files to write"
    cells, files = [], {}
    for c in nb['cells']:
        cells.append(c)
        for o in c.get('outputs', []):
            if 'image/png' not in o.get('data', {}): continue
            name = f'{assets}/{stem}_{len(files) + 1}.png'
            files[name] = base64.b64decode(_text(o['data']['image/png']))
            cells.append(_md(f'![]({name})'))
        if c['cell_type'] == 'code': c['outputs'] = [o for o in c['outputs'] if 'image/png' not in o.get('data', {})]
    return {**nb, 'cells': cells}, files

def readme_markdown(
    nb:dict,                    # the index notebook processed by nbdev (`process_notebook`)
    assets:str='docs_assets',   # folder of the figures, relative to the README
    nbs_path:str='nbs',         # where links to other notebooks point
    stem:str='index',           # figure file names: `<stem>_<n>.png`
)->tuple[str, dict[str, bytes]]:  # the Markdown and {figure path: PNG bytes}
    "`nb` as GitHub Markdown with its figures as separate files (what `nbdev_readme` makes with Quarto)"
    import pypandoc
    title, desc, _ = _front(nb, stem)
    page = quarto_options(nb)
    for c in page['cells']:
        if c['cell_type'] == 'markdown': c['source'] = _re_nb_link.sub(rf']({nbs_path}/\1)', _text(c['source']))
    page, files = _figures_to_files(page, assets, stem)
    page['metadata'] = {k: v for k, v in nb['metadata'].items() if k in ('kernelspec', 'language_info')}
    head = f'# {title}\n\n' + (f'> {desc}\n\n' if desc else '')
    with tempfile.TemporaryDirectory() as t:
        (Path(t)/'gfm.lua').write_text(_LUA_GFM)
        body = pypandoc.convert_text(json.dumps(page), 'gfm', format='ipynb', extra_args=[f'--lua-filter={Path(t)/"gfm.lua"}', '--wrap=preserve'])
    body = re.sub(r'^(`{3,}) (\w+)$', r'\1\2', body.strip(), flags=re.M)  # ```python, as GitHub's own examples write it
    return head + body + '\n', files

def build_readme(
    nb:str|Path=ROOT/'nbs'/'index.ipynb',  # the index notebook
    out:str|Path=ROOT/'README.md',         # the Markdown file to write
    assets:str='docs_assets',              # folder (beside `out`) receiving the figures
    execute:bool=False,                    # run the notebook first (default: its stored outputs, like nbdev_readme)
    timeout:int=600,                       # seconds allowed per cell when executing
)->Path:
    "Write `out` from `nb` as GitHub Markdown, with its figures under `assets`"
    nb, out = Path(nb), Path(out)
    with tempfile.TemporaryDirectory() as t:
        run = Path(t)/nb.name
        if execute:
            err = execute_notebook(nb, run, skip_flags(), timeout)
            if err: raise RuntimeError(f"{nb} failed to execute: {err}")
        else: shutil.copy2(nb, run)
        text, files = readme_markdown(process_notebook(run), assets, nb.parent.name, nb.stem)
    for name, data in files.items():
        (out.parent/name).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(out.parent/name, 'wb') as f: f.write(data)
    with atomic_file(out) as f: f.write(text)
    return out


# ## Command line

@call_parse
def main(
    out:Param("folder receiving the site", str)='_docs',
    execute:Param("run the notebooks first (false: use their stored outputs)", bool_arg)=True,
    timeout:Param("seconds allowed per cell", int)=600,
    engine:Param("'auto' (Quarto when installed), 'quarto' or 'pandoc'", str)='auto',
    readme:Param("also regenerate README.md from nbs/index.ipynb", bool_arg)=False,
    nbs_path:Param("folder of the notebooks", str)=str(ROOT/'nbs'),
)->DocsBuild:
    "Build the documentation site; exits non-zero naming every notebook that failed"
    res = build_docs(out, execute=execute, timeout=timeout, engine=engine, nbs_path=nbs_path)
    if readme: build_readme()
    print(f"{len(res.pages)} pages in {res.out_dir} ({res.engine})")
    if res.failed:
        raise SystemExit('failed:\n' + '\n'.join(f'  {k}: {v}' for k, v in res.failed.items()))
    return res
