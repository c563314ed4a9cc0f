//! File managers (Nautilus, Thunar through GLib; Dolphin through KIO; mc): their default
//! names, their copies, their Trash. Driven through the real libraries where the machine
//! has them (python3-gi for GLib, the `gio` command, `kioclient5`).

mod common;
use common::*;
use std::fs;

const LLAMA: &str = "registry.ollama.ai/library/llama3.2/latest";

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

/// Copies made with plain read/write (mc; here `dd`), with Python's shutil (sendfile), with
/// rsync, and a re-import of a GGUF the store already has write no data either.
#[test]
fn streamed_copies_of_known_data_write_nothing() {
    let Some((d, m, info)) = mounted_fixture(&[]) else { return };
    let outside = d.path().join("outside.gguf");
    fs::copy(m.p("llama3.2:latest/model.gguf"), &outside).unwrap();
    let blobs_before = blobs(&m.store);
    for (i, cmd) in [
        // dd reads and writes, as mc does (coreutils cat would use copy_file_range).
        format!(
            "dd if={} of={} bs=1M status=none",
            q(&m.p("llama3.2:latest/model.gguf")),
            q(&m.p("cat:v1/model.gguf"))
        ),
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
    // rsync writes each file to a temp name (`.model.gguf.Ab12Cd`), then renames it: the
    // temp file is compared too, and becomes the layer on rename. Byte-identical manifest.
    let before = m.daemon_disk_writes();
    sh_ok(&format!("rsync -a {}/ {}/", q(&m.p("llama3.2:latest")), q(&m.p("rsync:v1"))));
    let written = m.daemon_disk_writes() - before;
    assert!(written < 1 << 20, "rsync wrote {written} bytes");
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/library/rsync/v1"), manifest_bytes(&m.store, LLAMA));
    assert_eq!(blobs(&m.store), blobs_before);
    assert_store_clean(&m.store);
}

/// Run `gio` (GLib's command line, what Nautilus and Thunar do underneath).
fn gio_available() -> bool {
    let ok = sh("command -v gio").status.success();
    assert!(ok || std::env::var("CI").is_err(), "CI=true but no `gio` (libglib2.0-bin)");
    if !ok {
        skip("no `gio` command (apt-get install libglib2.0-bin)");
    }
    ok
}

/// A mounted fixture, GLib's Python binding and the `gio` command (or None: skipped).
fn mounted_with_gio() -> Option<(tempfile::TempDir, Mount, ollamafs::fixture::Info, &'static str)> {
    let (d, m, info) = mounted_fixture(&[])?;
    let py = python_with_gi()?;
    gio_available().then_some((d, m, info, py))
}

/// `gio trash` moves a model into `MOUNT/.Trash-0` by rename: it leaves the store, nothing
/// is copied, and its blobs survive even Ollama's start-up prune. Restore (a rename back,
/// as the file managers do) publishes it byte for byte; emptying the trash prunes.
#[test]
fn gio_trash_restore_and_empty() {
    let Some((d, m, info, py)) = mounted_with_gio() else { return };
    let custom = "registry.ollama.ai/myuser/llama3.2/custom";
    let before = manifest_bytes(&m.store, custom);
    let blobs_before = blobs(&m.store);
    let writes = m.daemon_disk_writes();
    sh_ok(&format!("gio trash {}", q(&m.p("myuser/llama3.2:custom"))));
    assert!(m.daemon_disk_writes() - writes < 1 << 20, "trashing copied data");
    assert!(!manifest_files(&m.store).contains(custom), "a trashed model leaves the store");
    assert!(!m.p("myuser/llama3.2:custom").exists());
    let trash = m.p(".Trash-0");
    let meta = fs::metadata(&trash).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o700), "the Trash specification's owner and mode");
    let item = trash.join("files/llama3.2:custom");
    assert_eq!(fs::read_to_string(item.join("system")).unwrap(), ollamafs::fixture::SYSTEM_CUSTOM);
    let info_text = fs::read_to_string(trash.join("info/llama3.2:custom.trashinfo"))
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", sh_ok(&format!("ls -la {}/info", q(&trash))), m.log_text()));
    assert!(info_text.contains("Path=myuser/llama3.2%3Acustom"), "{info_text}");
    assert_eq!(blobs(&m.store), blobs_before, "nothing pruned while in the trash");
    assert_verifies(&m.store);
    // Ollama's start-up prune deletes blobs no manifest names: the trash keeps the data.
    let system_blob = m.store.join("blobs").join(info.system_custom.blob_file_name());
    fs::remove_file(&system_blob).unwrap();
    // Restore as the file managers do: make the original folder if it is gone (it stays
    // while the mount lives, not across a remount), move files/NAME back to the Path of its
    // info file.
    glib(
        py,
        d.path(),
        "dst = Gio.File.new_for_path(sys.argv[2])\nif not dst.get_parent().query_exists(None):\n    dst.get_parent().make_directory_with_parents(None)\n\
         Gio.File.new_for_path(sys.argv[1]).move(dst, Gio.FileCopyFlags.NONE, None, None, None)\n\
         Gio.File.new_for_path(sys.argv[3]).delete(None)\n",
        &[&item, &m.p("myuser/llama3.2:custom"), &trash.join("info/llama3.2:custom.trashinfo")],
    );
    assert_eq!(manifest_bytes(&m.store, custom), before, "restored byte for byte");
    assert!(system_blob.exists(), "the pruned blob came back from the trash");
    assert_store_clean(&m.store);
    // A layer file goes to the trash and back too.
    sh_ok(&format!("gio trash {}", q(&m.p("myuser/llama3.2:custom/license-2"))));
    assert!(!m.p("myuser/llama3.2:custom/license-2").exists());
    sh_ok(&format!("mv {} {}", q(&trash.join("files/license-2")), q(&m.p("myuser/llama3.2:custom/license-2"))));
    assert_eq!(manifest_bytes(&m.store, custom), before);
    // Trash again, then empty the trash as GLib does (delete children, then the folder).
    sh_ok(&format!("gio trash {}", q(&m.p("myuser/llama3.2:custom"))));
    glib(
        py,
        d.path(),
        "def rm(f):\n    if f.query_file_type(Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS, None) == Gio.FileType.DIRECTORY:\n\
         \x20       for i in f.enumerate_children('standard::name', Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS, None):\n\
         \x20           rm(f.get_child(i.get_name()))\n    f.delete(None)\n\
         for sub in ('files', 'info'):\n    d = Gio.File.new_for_path(sys.argv[1]).get_child(sub)\n\
         \x20   for i in d.enumerate_children('standard::name', Gio.FileQueryInfoFlags.NOFOLLOW_SYMLINKS, None):\n\
         \x20       rm(d.get_child(i.get_name()))\n",
        &[&trash],
    );
    assert!(!system_blob.exists(), "emptying the trash prunes what only the trashed model used");
    assert!(blobs(&m.store).contains(&info.big_model.blob_file_name()), "shared weights stay");
    assert_store_clean(&m.store);
}

/// `gio trash` of a namespace folder (`myuser/`): every model in it (published or a draft
/// with its scratch files) goes to the trash by rename, nothing copied; Restore brings all
/// of them back byte for byte; emptying prunes what only they used.
#[test]
fn gio_trash_of_a_namespace_folder_and_restore() {
    let Some((d, m, info, py)) = mounted_with_gio() else { return };
    sh_ok(&format!("cp -r {} {}", q(&m.p("llama3.2:latest")), q(&m.p("myuser/second:v1"))));
    sh_ok(&format!("mkdir {0} && echo mine > {0}/notes.txt", q(&m.p("myuser/New Folder"))));
    let (custom, second) = ("registry.ollama.ai/myuser/llama3.2/custom", "registry.ollama.ai/myuser/second/v1");
    let before = (manifest_bytes(&m.store, custom), manifest_bytes(&m.store, second));
    let blobs_before = blobs(&m.store);
    let writes = m.daemon_disk_writes();
    sh_ok(&format!("gio trash {}", q(&m.p("myuser"))));
    assert!(m.daemon_disk_writes() - writes < 1 << 20, "trashing copied data");
    let stored = manifest_files(&m.store);
    assert!(!stored.contains(custom) && !stored.contains(second), "its models left the store: {stored:?}");
    assert!(!m.p("myuser").exists());
    let item = m.p(".Trash-0/files/myuser");
    assert_eq!(fs::read_to_string(item.join("llama3.2:custom/system")).unwrap(), ollamafs::fixture::SYSTEM_CUSTOM);
    assert_eq!(fs::read_to_string(item.join("New Folder/notes.txt")).unwrap(), "mine\n");
    assert_eq!(blobs(&m.store), blobs_before, "nothing pruned while in the trash");
    assert_verifies(&m.store);

    glib(
        py,
        d.path(),
        "Gio.File.new_for_path(sys.argv[1]).move(Gio.File.new_for_path(sys.argv[2]), Gio.FileCopyFlags.NONE, None, None, None)\n\
         Gio.File.new_for_path(sys.argv[3]).delete(None)\n",
        &[&item, &m.p("myuser"), &m.p(".Trash-0/info/myuser.trashinfo")],
    );
    assert_eq!((manifest_bytes(&m.store, custom), manifest_bytes(&m.store, second)), before, "restored byte for byte");
    assert_eq!(fs::read_to_string(m.p("myuser/New Folder/notes.txt")).unwrap(), "mine\n", "the draft came back");
    assert!(!item.exists());

    // Into the trash again, then emptied: what only those models used is pruned.
    sh_ok(&format!("gio trash {}", q(&m.p("myuser"))));
    sh_ok(&format!("rm -rf {} {}", q(&item), q(&m.p(".Trash-0/info/myuser.trashinfo"))));
    assert!(!m.store.join("blobs").join(info.system_custom.blob_file_name()).exists(), "pruned when emptied");
    assert!(blobs(&m.store).contains(&info.big_model.blob_file_name()), "shared weights stay");

    // A host folder with a namespace inside, listed while in the trash (the kernel caches
    // the folders between it and the model under their trash names), then restored.
    let tiny = "localhost:5000/team/tiny/v1";
    let tiny_before = manifest_bytes(&m.store, tiny);
    sh_ok(&format!("gio trash {}", q(&m.p("localhost:5000"))));
    assert!(!manifest_files(&m.store).contains(tiny));
    // One shell line, so the kernel's cached entries are still fresh when they are used.
    let listed = sh_ok(&format!(
        "ls -R {0} > /dev/null && mv {0} {1} && ls {1}/team && ls {1}/team/tiny:v1",
        q(&m.p(".Trash-0/files/localhost:5000")),
        q(&m.p("localhost:5000"))
    ));
    assert!(listed.contains("model.gguf"), "{listed}");
    assert_eq!(manifest_bytes(&m.store, tiny), tiny_before);
    assert_store_clean(&m.store);
}

/// Dolphin (KIO) uses a mount's own trash only for devices Solid knows (block devices and
/// network shares); an ollamafs mount is neither, so KIO copies the model into the home
/// Trash, then deletes it file by file. That must be safe at every step and must finish.
#[test]
fn kio_move_to_trash_copies_out_then_deletes_safely() {
    let Some((d, m, info)) = mounted_fixture(&[]) else { return };
    let have = sh("command -v kioclient5").status.success();
    assert!(have || std::env::var("CI").is_err(), "CI=true but no kioclient5 (kde-cli-tools)");
    if !have {
        skip("KIO test: no kioclient5 (apt-get install kde-cli-tools)");
        return;
    }
    let home = d.path().join("home");
    let rt = d.path().join("xdg-runtime");
    fs::create_dir_all(&home).unwrap();
    fs::create_dir_all(&rt).unwrap();
    sh_ok(&format!("chmod 700 {}", q(&rt)));
    let llama = manifest_bytes(&m.store, LLAMA);
    let custom_before = manifest_bytes(&m.store, "registry.ollama.ai/myuser/llama3.2/custom");
    let t0 = std::time::Instant::now();
    let o = sh(&format!(
        "HOME={} XDG_RUNTIME_DIR={} QT_QPA_PLATFORM=offscreen timeout 60 kioclient5 --noninteractive move {} trash:/",
        q(&home),
        q(&rt),
        q(&m.p("myuser/llama3.2:custom"))
    ));
    assert!(o.status.success(), "kioclient5 failed or hung: {}", stderr(&o));
    assert!(t0.elapsed().as_secs() < 30, "KIO took {:?}", t0.elapsed());
    let copied = home.join(".local/share/Trash/files/llama3.2:custom");
    assert_eq!(fs::read_to_string(copied.join("system")).unwrap(), ollamafs::fixture::SYSTEM_CUSTOM);
    assert_eq!(fs::metadata(copied.join("model.gguf")).unwrap().len(), info.big_size);
    let man: serde_json::Value = serde_json::from_slice(&fs::read(copied.join("manifest.json")).unwrap()).unwrap();
    assert_ne!(man["config"]["digest"], "", "the copy in the home Trash has the complete manifest");
    assert!(!m.p("myuser/llama3.2:custom").exists());
    assert!(!manifest_files(&m.store).iter().any(|f| f.contains("/myuser/")));
    assert_eq!(manifest_bytes(&m.store, LLAMA), llama);
    assert_store_clean(&m.store);

    // Restore from the home Trash (KIO copies it back across filesystems, then deletes):
    // the model is back byte for byte, and the weights the store still has are compared,
    // not written again.
    let writes = m.daemon_disk_writes();
    let kio = |args: &str| {
        let o = sh(&format!(
            "HOME={} XDG_RUNTIME_DIR={} QT_QPA_PLATFORM=offscreen timeout 60 kioclient5 --noninteractive {args}",
            q(&home),
            q(&rt)
        ));
        assert!(o.status.success(), "kioclient5 {args}: {}", stderr(&o));
    };
    kio(&format!("move {} {}", q(&copied), q(&m.p("myuser/llama3.2:custom"))));
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/myuser/llama3.2/custom"), custom_before);
    assert!(m.daemon_disk_writes() - writes < 4 << 20, "the weights were compared, not written");
    // Dolphin's copy and paste inside the mount: a new model, no new blob.
    let before = blobs(&m.store);
    kio(&format!("copy {} {}", q(&m.p("llama3.2:latest")), q(&m.p("llama3.2:kio"))));
    assert_eq!(manifest_bytes(&m.store, "registry.ollama.ai/library/llama3.2/kio"), llama);
    assert_eq!(blobs(&m.store), before);
    assert_store_clean(&m.store);
}
