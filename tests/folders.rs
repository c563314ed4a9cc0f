//! One folder, one state, with the real tools: what a folder shows, Replace, moves with
//! work in progress, the Trash emptied the GVFS way, folder times (docs/SEMANTICS.md,
//! "Folders").

mod common;
use common::*;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

const LLAMA: &str = "registry.ollama.ai/library/llama3.2/latest";

/// GLib copies a folder as Nautilus and Thunar do: make the folder (or, when it exists,
/// merge into it), then `g_file_copy` each file in listing order, with OVERWRITE when the
/// user chose "Replace All".
const GLIB_COPY_FOLDER: &str = r#"
src = Gio.File.new_for_path(sys.argv[1])
dst = Gio.File.new_for_path(sys.argv[2])
flags = Gio.FileCopyFlags.NONE
try:
    dst.make_directory(None)
except GLib.Error as e:
    if not e.matches(Gio.io_error_quark(), Gio.IOErrorEnum.EXISTS):
        raise
    flags = Gio.FileCopyFlags.OVERWRITE
for i in src.enumerate_children('standard::name', Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS, None):
    src.get_child(i.get_name()).copy(dst.get_child(i.get_name()), flags, None, None, None)
    dst.get_child(i.get_name()).query_info('standard::size', Gio.FileQueryInfoFlags.NONE, None)
"#;

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// `mkdir "r (copy)"; cp …/manifest.json "r (copy)"/` then `stat`: the file is there at
/// once, and nothing else appears in the folder on its own, however long one waits.
#[test]
fn a_draft_shows_exactly_what_was_written() {
    let Some((_d, m, _)) = mounted_fixture(&[]) else { return };
    let draft = m.p("r (copy)");
    sh_ok(&format!(
        "mkdir {0} && cp {1} {0}/ && stat {0}/manifest.json",
        q(&draft),
        q(&m.p("llama3.2:latest/manifest.json"))
    ));
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(listing(&draft), ["manifest.json"]);
    assert_eq!(fs::read(draft.join("manifest.json")).unwrap(), fs::read(m.p("llama3.2:latest/manifest.json")).unwrap());
    // Folders made in the mount date from when they were made (GIO, KIO and Nautilus show it).
    sh_ok(&format!("gio mkdir {} 2>/dev/null || mkdir {0}", q(&m.p("New Folder"))));
    let mtime = fs::metadata(m.p("New Folder")).unwrap().modified().unwrap();
    let age = SystemTime::now().duration_since(mtime).unwrap_or_default();
    assert!(age < Duration::from_secs(60), "a new folder's mtime is {age:?} old");
    assert_store_clean(&m.store);
}

/// Thunar pastes a model twice into the same folder: the first paste arrives as
/// `llama3.2_latest` (Thunar turns `:` into `_`) and stays listed under that name; the
/// second merges into it and "Replace All" rewrites every file, weights included.
#[test]
fn a_second_paste_with_replace_all_succeeds() {
    let Some((d, m, _)) = mounted_fixture(&[]) else { return };
    let Some(py) = python_with_gi() else { return };
    let src = m.p("llama3.2:latest");
    let dst = m.p("llama3.2_latest");
    glib(py, d.path(), GLIB_COPY_FOLDER, &[&src, &dst]);
    let root = listing(&m.p(""));
    assert!(root.contains(&"llama3.2_latest".to_string()), "{root:?}");
    assert!(!root.contains(&"llama3.2_latest:latest".to_string()), "{root:?}");
    assert!(fs::metadata(m.p("llama3.2_latest:latest")).is_err(), "stat finds only what ls lists");
    glib(py, d.path(), GLIB_COPY_FOLDER, &[&src, &dst]);
    let copy = "registry.ollama.ai/library/llama3.2_latest/latest";
    assert_eq!(manifest_bytes(&m.store, copy), manifest_bytes(&m.store, LLAMA));
    assert_store_clean(&m.store);
}

/// `cp new.gguf MODEL/model.gguf` and GLib's Replace (`g_file_copy` with OVERWRITE, which
/// opens a shared weights file O_RDWR and truncates it) replace the layer in that model
/// only, in the same position; the other models keep the shared blob.
#[test]
fn copying_onto_weights_replaces_the_layer() {
    let Some((d, m, _)) = mounted_fixture(&[]) else { return };
    let Some(py) = python_with_gi() else { return };
    let custom = "registry.ollama.ai/myuser/llama3.2/custom";
    let custom_before = manifest_bytes(&m.store, custom);
    let gguf = d.path().join("phi3.gguf");
    ollamafs::fixture::write_gguf_file(&gguf, "phi3", 15, 2 << 20).unwrap();
    glib(
        py,
        d.path(),
        "Gio.File.new_for_path(sys.argv[1]).copy(Gio.File.new_for_path(sys.argv[2]), Gio.FileCopyFlags.OVERWRITE, None, None, None)\n",
        &[&gguf, &m.p("llama3.2:latest/model.gguf")],
    );
    sh_ok(&format!("cmp {} {}", q(&gguf), q(&m.p("llama3.2:latest/model.gguf"))));
    let v: serde_json::Value = serde_json::from_str(&manifest_bytes(&m.store, LLAMA)).unwrap();
    assert_eq!(v["layers"][0]["mediaType"], "application/vnd.ollama.image.model", "same position");
    assert_eq!(v["layers"][0]["size"], 2 << 20);
    assert_eq!(manifest_bytes(&m.store, custom), custom_before, "the other model keeps its weights");
    // coreutils cp onto the other model's file: O_TRUNC.
    sh_ok(&format!("cp {} {}", q(&gguf), q(&m.p("myuser/llama3.2:custom/model.gguf"))));
    assert_ne!(manifest_bytes(&m.store, custom), custom_before);
    use std::os::unix::fs::MetadataExt;
    let a = fs::metadata(m.p("llama3.2:latest/model.gguf")).unwrap();
    let b = fs::metadata(m.p("myuser/llama3.2:custom/model.gguf")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), b.nlink()), "both now show the one new blob");
    assert_store_clean(&m.store);
}

/// `mv` of a folder whose `manifest.json` waits for a blob, then the blob arrives: the
/// written manifest is applied under the new name, byte for byte.
#[test]
fn a_moved_folder_keeps_its_waiting_manifest() {
    let Some((d, m, _)) = mounted_fixture(&[]) else { return };
    let text = "a system prompt the store does not have\n";
    let mut v: serde_json::Value = serde_json::from_str(&manifest_bytes(&m.store, LLAMA)).unwrap();
    let digest = format!(
        "sha256:{}",
        sh_ok(&format!("printf %s {} | sha256sum", q(Path::new(text)))).split(' ').next().unwrap()
    );
    v["layers"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.ollama.image.system", "digest": digest, "size": text.len()
    }));
    let wanted = serde_json::to_vec(&v).unwrap();
    fs::write(d.path().join("manifest.json"), &wanted).unwrap();
    sh_ok(&format!("mkdir {0} && cp {1} {0}/", q(&m.p("wait:v1")), q(&d.path().join("manifest.json"))));
    sh_ok(&format!("mv {} {}", q(&m.p("wait:v1")), q(&m.p("moved:v1"))));
    sh_ok(&format!("printf %s {} > {}", q(Path::new(text)), q(&m.p("moved:v1/system"))));
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/library/moved/v1").as_bytes(), wanted.as_slice());
    let mut m = m;
    m.unmount();
    assert!(!m.log_text().contains("still waiting"), "{}", m.log_text());
}

/// `mkdir` + a GGUF copied in, then at once `cp -r` of it elsewhere and `rm -r` of it:
/// all succeed, and nothing of it comes back.
#[test]
fn rm_r_of_a_model_made_a_moment_ago() {
    let Some((d, m, _)) = mounted_fixture(&[]) else { return };
    let gguf = d.path().join("new.gguf");
    ollamafs::fixture::write_gguf_file(&gguf, "qwen2", 15, 3 << 20).unwrap();
    let (x, y) = (m.p("fresh:v1"), m.p("other:v1"));
    sh_ok(&format!("mkdir {0} && cp {1} {0}/model.gguf && cp -r {0} {2} && rm -r {0}", q(&x), q(&gguf), q(&y)));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!x.exists(), "nothing of it reappears");
    assert!(!manifest_files(&m.store).contains("registry.ollama.ai/library/fresh/v1"));
    assert!(manifest_files(&m.store).contains("registry.ollama.ai/library/other/v1"));
    sh_ok(&format!("cmp {} {}", q(&gguf), q(&y.join("model.gguf"))));
    assert_store_clean(&m.store);
}

/// Nautilus' and Thunar's Empty Trash (and `gio trash --empty`): gvfsd-trash moves each
/// item into `.Trash-$UID/expunged/` and deletes it there. The model's own blobs are
/// pruned, its shared blobs stay, and the trash ledger is empty.
#[test]
fn emptying_the_trash_through_gvfs_prunes() {
    let Some((d, m, info)) = mounted_fixture(&[]) else { return };
    let has_gvfs = Path::new("/usr/libexec/gvfsd-trash").exists() && sh("command -v dbus-run-session").status.success();
    assert!(has_gvfs || std::env::var("CI").is_err(), "CI=true but no gvfs (apt-get install gvfs dbus)");
    if !has_gvfs {
        skip("no gvfsd-trash / dbus-run-session (apt-get install gvfs dbus)");
        return;
    }
    let system_blob = m.store.join("blobs").join(info.system_custom.blob_file_name());
    sh_ok(&format!("gio trash {}", q(&m.p("myuser/llama3.2:custom"))));
    assert!(system_blob.exists(), "kept while in the trash");
    let runtime = d.path().join("xdg");
    fs::create_dir(&runtime).unwrap();
    // gvfsd-trash deletes in its own thread after `gio trash --empty` returns: the session
    // stays up until `expunged/` is empty.
    let expunged = m.p(".Trash-0/expunged");
    sh_ok(&format!(
        "chmod 700 {0}; XDG_RUNTIME_DIR={0} timeout 60 dbus-run-session -- sh -c \
         'gio trash --empty && for i in $(seq 100); do [ -z \"$(ls -A {1} 2>/dev/null)\" ] && break; sleep 0.1; done'",
        q(&runtime),
        expunged.display()
    ));
    assert!(listing(&m.p(".Trash-0/files")).is_empty());
    assert!(!system_blob.exists(), "the trashed model's own blob is pruned");
    assert!(m.store.join("blobs").join(info.big_model.blob_file_name()).exists(), "shared weights stay");
    let ledger = fs::read_to_string(m.store.join(".ollamafs/trash/0.json")).unwrap_or_default();
    assert!(!ledger.contains("custom"), "{ledger}");
    assert_store_clean(&m.store);
}
