//! Inode numbers: one per node, ranges chosen so `cp -r` copies `manifest.json` last,
//! weights numbered from their digest (stable across mounts), lookups counted for `forget`.

use std::collections::HashMap;

use super::*;
use crate::layout;

#[derive(Default)]
pub(crate) struct Inodes {
    pub(super) by_node: HashMap<Node, u64>,
    pub(super) by_ino: HashMap<u64, (Node, u64)>,
    pub(super) next: u64,
    pub(super) next_config: u64,
    pub(super) next_manifest: u64,
}

impl Inodes {
    pub(super) fn ino_of(&mut self, node: &Node) -> u64 {
        if let Node::Dir(p) = node
            && p.is_empty()
        {
            return ROOT_INO;
        }
        if let Some(&ino) = self.by_node.get(node) {
            return ino;
        }
        let counter = |c: &mut u64, base: u64| {
            *c += 1;
            base + *c
        };
        let ino = match node {
            Node::Blob(d) => BLOB_INO_BASE | (d.short() & BLOB_INO_MASK),
            Node::File(_, f) if f == layout::CONFIG_FILE => counter(&mut self.next_config, CONFIG_INO_BASE),
            Node::File(_, f) if f == layout::MANIFEST_FILE => counter(&mut self.next_manifest, MANIFEST_INO_BASE),
            _ => counter(&mut self.next, 0),
        };
        self.by_node.insert(node.clone(), ino);
        self.by_ino.insert(ino, (node.clone(), 0));
        ino
    }

    /// Count a lookup the kernel will later `forget`.
    pub(super) fn remember(&mut self, node: &Node) -> u64 {
        let ino = self.ino_of(node);
        if let Some(e) = self.by_ino.get_mut(&ino) {
            e.1 += 1;
        }
        ino
    }

    /// The kernel forgets `n` lookups of `ino`; the node it dropped for good, if any.
    pub(super) fn forget(&mut self, ino: u64, n: u64) -> Option<Node> {
        if ino == ROOT_INO {
            return None;
        }
        let drop_it = match self.by_ino.get_mut(&ino) {
            Some(e) => {
                e.1 = e.1.saturating_sub(n);
                e.1 == 0
            }
            None => false,
        };
        if drop_it && let Some((node, _)) = self.by_ino.remove(&ino) {
            // A rename may have handed this node's name to another inode meanwhile.
            if self.by_node.get(&node) == Some(&ino) {
                self.by_node.remove(&node);
                return Some(node);
            }
        }
        None
    }

    pub(super) fn node(&self, ino: u64) -> Option<Node> {
        if ino == ROOT_INO {
            return Some(Node::Dir(String::new()));
        }
        self.by_ino.get(&ino).map(|(n, _)| n.clone())
    }

    /// A node changed identity (rename): keep its inode under the new node.
    /// The kernel keeps the renamed inode under the new name, so the new name's node
    /// must now be this inode (any inode the new name had is left to be forgotten).
    pub(super) fn rekey(&mut self, old: &Node, new: &Node) {
        if let Some(ino) = self.by_node.remove(old) {
            self.by_node.insert(new.clone(), ino);
            if let Some(e) = self.by_ino.get_mut(&ino) {
                e.0 = new.clone();
            }
        }
    }
}
