//! A small owned element tree: one stanza (a depth-1 child of the stream root) at a time.
//!
//! Names are stored resolved: a local name plus the namespace URI it is bound to. Namespace
//! declarations are not kept as attributes; the writer emits `xmlns` where an element's namespace
//! differs from its parent's. Attribute names are kept as written (`type`, `xml:lang`).

use std::fmt;

/// One element with its attributes and children, in document order.
#[derive(Clone, PartialEq, Eq)]
pub struct Element {
    name: String,
    ns: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

/// A child of an element: an element or a run of character data (entities already resolved).
#[derive(Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    /// An element `name` in namespace `ns`, without attributes or children.
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: sets an attribute (replacing an earlier value of the same name).
    pub fn attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Builder: sets an attribute only when `value` is `Some`.
    pub fn attr_opt(self, name: impl Into<String>, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.attr(name, v),
            None => self,
        }
    }

    /// Builder: appends a child element.
    pub fn child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: appends text.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.push_text(text);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// True when this element is `name` in namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn get_attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name, value)),
        }
    }

    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let at = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(at).1)
    }

    pub fn push_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Appends text, merging with a preceding text node (entities arrive as separate pieces).
    pub fn push_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        match self.children.last_mut() {
            Some(Node::Text(prev)) => prev.push_str(&text),
            _ => self.children.push(Node::Text(text)),
        }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    /// The child elements, in order (text is skipped).
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child `name` in namespace `ns`.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|c| c.is(name, ns))
    }

    /// Removes and returns the first child `name` in namespace `ns`.
    pub fn take_child(&mut self, name: &str, ns: &str) -> Option<Element> {
        let at = self
            .children
            .iter()
            .position(|n| matches!(n, Node::Element(e) if e.is(name, ns)))?;
        match self.children.remove(at) {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        }
    }

    /// Removes and returns all child elements, in order; text between them is dropped. For
    /// parsers that sort children into fields without copying them.
    pub fn take_children(&mut self) -> Vec<Element> {
        std::mem::take(&mut self.children)
            .into_iter()
            .filter_map(|n| match n {
                Node::Element(e) => Some(e),
                Node::Text(_) => None,
            })
            .collect()
    }

    /// All direct text of this element, concatenated (child elements' text is not included).
    pub fn text_content(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// Serialises the element as XML; `parent_ns` is the default namespace in scope at the point
    /// where it is written (so `xmlns` is emitted only where it changes).
    pub fn to_xml(&self, parent_ns: &str) -> String {
        let mut out = String::new();
        super::writer::write_element(&mut out, self, parent_ns);
        out
    }
}

/// Debug shows the structure without text or attribute values: stanzas carry message bodies and
/// keys, which must not reach logs.
impl fmt::Debug for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} xmlns={:?}", self.name, self.ns)?;
        for (k, _) in &self.attrs {
            write!(f, " {k}=…")?;
        }
        write!(f, ">")?;
        for c in self.children() {
            write!(f, "{c:?}")?;
        }
        write!(f, "</{}>", self.name)
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Element(e) => e.fmt(f),
            Node::Text(t) => write!(f, "Text({} bytes)", t.len()),
        }
    }
}
