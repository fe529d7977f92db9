//! Where each key and list item of the YAML text stands, so that semantic
//! errors found after serde can still name a line and column.
//!
//! serde_yaml does not expose positions of values it deserialized
//! successfully, so the same text is walked a second time with yaml-rust2's
//! event parser. Paths are dotted, with list indices as segments:
//! `listeners.0.routes.1.forward.target_group`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::error::Location;

/// Path -> location of that key (for mapping keys) or of the start of that
/// item (for list indices). Keys that are not scalars, and nodes reached
/// only through aliases, are not recorded.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    locations: HashMap<String, Location>,
    /// Keys given twice in one mapping: the path and the second one's place.
    duplicates: Vec<(String, Location)>,
    /// The document has a root node that is not an empty/null scalar.
    has_content: bool,
    /// Some mapping has a `<<` merge key.
    merges: bool,
}

impl SourceMap {
    /// Builds the map from `text`. Never fails: on a syntax error (serde_yaml
    /// reports those) the map holds what was read before it.
    pub fn build(text: &str) -> SourceMap {
        let mut sink = Sink::default();
        let mut parser = Parser::new_from_str(text);
        // Only the first document: serde_yaml rejects a second one anyway.
        let complete = parser.load(&mut sink, false).is_ok();
        SourceMap {
            locations: sink.locations,
            duplicates: sink.duplicates,
            has_content: sink.root_has_content || !complete,
            merges: sink.merges,
        }
    }

    /// The first key given twice in one mapping, as its path and where the
    /// second occurrence stands (serde only says which mapping).
    pub fn first_duplicate(&self) -> Option<(&str, Location)> {
        self.duplicates.first().map(|(p, l)| (p.as_str(), *l))
    }

    /// Where the key or list item at `path` starts.
    /// `find("target_groups.2.health_check")`, `find("workers")`.
    pub fn find(&self, path: &str) -> Option<Location> {
        self.locations.get(path).copied()
    }

    /// Like [`find`](Self::find), but falls back to the closest recorded
    /// ancestor, so that an error still points somewhere useful when its
    /// exact key was reached through an alias.
    pub fn find_nearest(&self, path: &str) -> Option<Location> {
        let mut p = path;
        loop {
            if let Some(loc) = self.find(p) {
                return Some(loc);
            }
            p = &p[..p.rfind('.')?];
        }
    }

    /// Whether some mapping has a `<<` merge key (YAML 1.1).
    pub(crate) fn has_merge_keys(&self) -> bool {
        self.merges
    }

    /// False when the text holds no document or only a null one (an empty
    /// file, only comments, `---`, `~`).
    pub(crate) fn has_content(&self) -> bool {
        self.has_content
    }
}

enum Frame {
    Mapping {
        path: String,
        /// The key whose value comes next; `None` while a key is expected.
        key: Option<String>,
        /// This mapping is a list item whose recorded start may still move
        /// to its first key (see `place`).
        item: bool,
    },
    Sequence {
        path: String,
        next_index: usize,
    },
}

#[derive(Default)]
struct Sink {
    stack: Vec<Frame>,
    locations: HashMap<String, Location>,
    duplicates: Vec<(String, Location)>,
    root_has_content: bool,
    seen_root: bool,
    merges: bool,
}

/// Joins a parent path and a segment; the document root has the empty path.
fn join(parent: &str, segment: &str) -> String {
    if parent.is_empty() {
        segment.to_string()
    } else {
        format!("{parent}.{segment}")
    }
}

impl Sink {
    /// Works out the path of the node that just started, records it when it
    /// is a key or a list item, and advances the enclosing container.
    /// Returns the node's path and whether it is a mapping key.
    fn place(&mut self, scalar: Option<&str>, loc: Location) -> (String, bool) {
        match self.stack.last_mut() {
            None => {
                self.seen_root = true;
                (String::new(), false)
            }
            Some(Frame::Sequence { path, next_index }) => {
                let p = join(path, &next_index.to_string());
                *next_index += 1;
                self.locations.entry(p.clone()).or_insert(loc);
                (p, false)
            }
            Some(Frame::Mapping {
                path,
                key: key @ None,
                item,
            }) => {
                // yaml-rust2 marks a block mapping's start at its first `:`,
                // not at its first key; a list item starts at whichever
                // comes first (`{` of a flow mapping, or the first key).
                if std::mem::take(item) {
                    if let Some(start) = self.locations.get_mut(path.as_str()) {
                        *start = (*start).min(loc);
                    }
                }
                // A complex (non-scalar) key gets a placeholder segment so that
                // its value is still paired with it.
                let k = scalar.unwrap_or("?").to_string();
                let p = join(path, &k);
                if scalar.is_some() {
                    match self.locations.entry(p.clone()) {
                        std::collections::hash_map::Entry::Occupied(_) => {
                            self.duplicates.push((p.clone(), loc));
                        }
                        std::collections::hash_map::Entry::Vacant(v) => {
                            v.insert(loc);
                        }
                    }
                }
                *key = Some(k);
                (p, true)
            }
            Some(Frame::Mapping {
                path,
                key: key @ Some(_),
                ..
            }) => {
                let p = join(path, key.as_deref().unwrap_or("?"));
                *key = None;
                (p, false)
            }
        }
    }

    fn start_container(&mut self, frame: impl FnOnce(String, bool) -> Frame, loc: Location) {
        let is_item = matches!(self.stack.last(), Some(Frame::Sequence { .. }));
        let (path, is_key) = self.place(None, loc);
        if is_key {
            // A mapping or sequence used as a key: its value comes after it.
            // Nothing inside a complex key is worth recording.
            let p = format!("{path}.?key");
            self.stack.push(frame(p, false));
        } else {
            self.stack.push(frame(path, is_item));
        }
    }
}

impl MarkedEventReceiver for Sink {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        // yaml-rust2 0.11 lines are 1-based, columns 0-based.
        let loc = Location {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match ev {
            Event::Scalar(value, style, _, _) => {
                if self.stack.is_empty() && !self.seen_root {
                    let null = style == yaml_rust2::scanner::TScalarStyle::Plain
                        && matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL");
                    self.root_has_content = !null;
                }
                // A plain `<<` where a key is expected: a merge key.
                if style == yaml_rust2::scanner::TScalarStyle::Plain && value == "<<" {
                    self.merges |=
                        matches!(self.stack.last(), Some(Frame::Mapping { key: None, .. }));
                }
                self.place(Some(&value), loc);
            }
            Event::Alias(_) => {
                if self.stack.is_empty() {
                    self.root_has_content = true;
                }
                self.place(None, loc);
            }
            Event::MappingStart(..) => {
                if self.stack.is_empty() {
                    self.root_has_content = true;
                }
                self.start_container(
                    |path, item| Frame::Mapping {
                        path,
                        key: None,
                        item,
                    },
                    loc,
                );
            }
            Event::SequenceStart(..) => {
                if self.stack.is_empty() {
                    self.root_has_content = true;
                }
                self.start_container(
                    |path, _| Frame::Sequence {
                        path,
                        next_index: 0,
                    },
                    loc,
                );
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}
