//! File managers (Nautilus, Thunar through GLib; Dolphin through KIO; mc): their default
//! names, their copies, their Trash. Driven through the real libraries where the machine
//! has them (python3-gi for GLib, the `gio` command, `kioclient5`).

mod common;
use common::*;
use std::fs;
use std::path::Path;

const LLAMA: &str = "registry.ollama.ai/library/llama3.2/latest";

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// Run a Python snippet with GLib (`gi`); `sys.argv[1:]` are the paths given.
fn glib(py: &str, dir: &Path, code: &str, args: &[&Path]) -> String {
    let script = dir.join("glib_snippet.py");
    fs::write(
        &script,
        format!("import gi, sys\ngi.require_version('Gio', '2.0')\nfrom gi.repository import Gio, GLib\n{code}"),
    )
    .unwrap();
    let args: Vec<String> = args.iter().map(|a| q(a)).collect();
    sh_ok(&format!("{py} {} {}", q(&script), args.join(" ")))
}

/// Nautilus pastes a model into the same folder: `g_file_make_directory` of
/// "llama3.2:latest (copy)", then `g_file_copy` of every file (GLib tries FICLONE, then
/// splices the bytes through a pipe: no copy_file_range). The bytes match blobs the store
/// has, so they are compared, not written. The draft is published when renamed.
#[test]
fn nautilus_style_copy_writes_nothing_and_publishes_on_rename() {
    let Some((d, m, _)) = mounted_fixture(&[]) else { return };
    let Some(py) = python_with_gi() else { return };
    let blobs_before = blobs(&m.store);
    let before = m.daemon_disk_writes();
    glib(
        py,
        d.path(),
        "src = Gio.File.new_for_path(sys.argv[1])\ndst = Gio.File.new_for_path(sys.argv[2])\ndst.make_directory(None)\n\
         e = src.enumerate_children('standard::name', Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS, None)\n\
         for i in e:\n    src.get_child(i.get_name()).copy(dst.get_child(i.get_name()), Gio.FileCopyFlags.NONE, None, None, None)\n",
        &[&m.p("llama3.2:latest"), &m.p("llama3.2:latest (copy)")],
    );
    let written = m.daemon_disk_writes() - before;
    assert!(written < 1 << 20, "a copy of data the store has wrote {written} bytes");
    assert_eq!(blobs(&m.store), blobs_before, "no new blob");
    assert!(m.p("llama3.2:latest (copy)/model.gguf").exists(), "the draft shows its files");
    assert!(!manifest_files(&m.store).iter().any(|f| f.contains("copy")), "never published under that name");
    // Rename (F2 in Nautilus: g_file_set_display_name) to a model name: published, exact.
    glib(
        py,
        d.path(),
        "Gio.File.new_for_path(sys.argv[1]).set_display_name('llama3.2:copy', None)\n",
        &[&m.p("llama3.2:latest (copy)")],
    );
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/library/llama3.2/copy"), manifest_bytes(&m.store, LLAMA));
    assert_store_clean(&m.store);
}

/// The file managers' own names for new folders work: "New Folder" (Thunar, Nautilus
/// "Untitled Folder"), Dolphin's paste name `llama3 (1).2:latest`.
#[test]
fn default_folder_names_are_drafts() {
    let Some((d, m, _)) = mounted_fixture(&[]) else { return };
    let Some(py) = python_with_gi() else { return };
    glib(py, d.path(), "Gio.File.new_for_path(sys.argv[1]).make_directory(None)\n", &[&m.p("New Folder")]);
    assert!(m.p("New Folder").is_dir());
    sh_ok(&format!("cp -r {} {}", q(&m.p("qwen2.5:0.5b")), q(&m.p("qwen2.5 (1):0.5b"))));
    assert!(m.p("qwen2.5 (1):0.5b/model.gguf").exists());
    let files = manifest_files(&m.store);
    assert!(!files.iter().any(|f| f.contains("New") || f.contains("(1)")), "drafts are not published: {files:?}");
    assert!(m.log_text().contains("not a valid model name"));
    sh_ok(&format!("mv {} {}", q(&m.p("qwen2.5 (1):0.5b")), q(&m.p("qwen2.5:copy"))));
    assert_eq!(
        manifest_bytes(&m.store, "registry.ollama.ai/library/qwen2.5/copy"),
        manifest_bytes(&m.store, "registry.ollama.ai/library/qwen2.5/0.5b")
    );
    sh_ok(&format!("rmdir {}", q(&m.p("New Folder"))));
    assert_store_clean(&m.store);
}

/// Copies made with plain read/write (mc, `cat`), with Python's shutil (sendfile) and a
/// re-import of a GGUF the store already has write no data either.
#[test]
fn streamed_copies_of_known_data_write_nothing() {
    let Some((d, m, info)) = mounted_fixture(&[]) else { return };
    let outside = d.path().join("outside.gguf");
    fs::copy(m.p("llama3.2:latest/model.gguf"), &outside).unwrap();
    let blobs_before = blobs(&m.store);
    for (i, cmd) in [
        format!("cat {} > {}", q(&m.p("llama3.2:latest/model.gguf")), q(&m.p("cat:v1/model.gguf"))),
        format!(
            "python3 -c 'import shutil,sys; shutil.copyfile(sys.argv[1], sys.argv[2])' {} {}",
            q(&m.p("llama3.2:latest/model.gguf")),
            q(&m.p("shutil:v1/model.gguf"))
        ),
        format!("cp {} {}", q(&outside), q(&m.p("reimport:v1/model.gguf"))),
    ]
    .iter()
    .enumerate()
    {
        let dir = ["cat:v1", "shutil:v1", "reimport:v1"][i];
        sh_ok(&format!("mkdir {}", q(&m.p(dir))));
        let before = m.daemon_disk_writes();
        sh_ok(cmd);
        let written = m.daemon_disk_writes() - before;
        assert!(written < 1 << 20, "{cmd}: wrote {written} bytes");
        assert_eq!(fs::metadata(m.p(&format!("{dir}/model.gguf"))).unwrap().len(), info.big_size);
    }
    assert_eq!(blobs(&m.store), blobs_before, "the generated config is llama3.2's own: no new blob at all");
    assert_store_clean(&m.store);
}
