//! Where each key of a YAML document is: key path -> line and column.
//!
//! serde reports positions only for type errors; validation runs on the typed model, after
//! positions are gone. This index is built from the parser's marked events so a validation
//! error about `streams[3].ffmpeg_profile` can still say `config.yaml:27:5`.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Default)]
pub struct YamlIndex {
    positions: HashMap<String, Position>,
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        first: bool,
    },
    Seq {
        path: String,
        index: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    positions: HashMap<String, Position>,
}

fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl Builder {
    /// Called for every node. Returns the node's path when it is a value (not a key).
    fn node(&mut self, scalar: Option<&str>, mark: Marker) -> Option<String> {
        let pos = Position {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key, first }) => match key.take() {
                None => {
                    // This node is a key. A block mapping's start mark can sit after its
                    // first key; the first key is where a reader looks for the mapping.
                    if std::mem::take(first) {
                        self.positions.insert(path.clone(), pos);
                    }
                    let k = scalar.unwrap_or("?").to_owned();
                    let p = child(path, &k);
                    self.positions.entry(p).or_insert(pos);
                    *key = Some(k);
                    None
                }
                Some(k) => Some(child(path, &k)),
            },
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                self.positions.entry(p.clone()).or_insert(pos);
                Some(p)
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(ref v, ..) => {
                self.node(Some(v), mark);
            }
            Event::Alias(_) => {
                self.node(None, mark);
            }
            Event::MappingStart(..) => {
                if let Some(path) = self.node(None, mark) {
                    self.stack.push(Frame::Map {
                        path,
                        key: None,
                        first: true,
                    });
                } else {
                    // A complex (mapping) key: track it so nesting stays balanced.
                    self.stack.push(Frame::Map {
                        path: "?".into(),
                        key: None,
                        first: false,
                    });
                }
            }
            Event::SequenceStart(..) => {
                let path = self.node(None, mark).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

impl YamlIndex {
    /// Indexes `text`. A document that does not parse yields an empty index (serde reports
    /// the syntax error with its own position).
    pub fn build(text: &str) -> YamlIndex {
        let mut b = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut b, false).is_err() {
            return YamlIndex::default();
        }
        YamlIndex {
            positions: b.positions,
        }
    }

    /// The position of `path`, or of its nearest ancestor that exists in the document.
    pub fn find(&self, path: &str) -> Option<Position> {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
server:
  port: 5000
streams:
  - id: 1
    name: One
  - id: 2
    name: Two
    next_programs:
      - title: A
";

    #[test]
    fn finds_keys_and_sequence_elements() {
        let idx = YamlIndex::build(DOC);
        assert_eq!(
            idx.find("server.port"),
            Some(Position { line: 2, column: 3 })
        );
        assert_eq!(
            idx.find("streams[1]"),
            Some(Position { line: 6, column: 5 })
        );
        assert_eq!(
            idx.find("streams[1].name"),
            Some(Position { line: 7, column: 5 })
        );
        assert_eq!(
            idx.find("streams[1].next_programs[0].title"),
            Some(Position { line: 9, column: 9 })
        );
    }

    #[test]
    fn missing_keys_fall_back_to_the_nearest_ancestor() {
        let idx = YamlIndex::build(DOC);
        assert_eq!(
            idx.find("streams[0].ffmpeg_profile"),
            idx.find("streams[0]")
        );
        assert_eq!(idx.find("nothing.here"), None);
    }
}
