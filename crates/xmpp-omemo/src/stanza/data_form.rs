//! XEP-0004: Data Forms <https://xmpp.org/extensions/xep-0004.html>, only as far as we need them:
//! submitting a form whose type is given by a hidden `FORM_TYPE` field (XEP-0068), and reading
//! one field of a form the server sent.

use super::ns;
use crate::xml::Element;

/// `<x xmlns='jabber:x:data' type='submit'>` with the hidden `FORM_TYPE` field set to
/// `form_type`, then one single-valued field per `(var, value)`, in order.
pub fn submit(form_type: &str, fields: &[(&str, &str)]) -> Element {
    let mut x = Element::new("x", ns::DATA_FORMS)
        .attr("type", "submit")
        .child(field("FORM_TYPE", form_type).attr("type", "hidden"));
    for (var, value) in fields {
        x.push_child(field(var, value));
    }
    x
}

fn field(var: &str, value: &str) -> Element {
    Element::new("field", ns::DATA_FORMS)
        .attr("var", var)
        .child(Element::new("value", ns::DATA_FORMS).text(value))
}

/// The first `<value/>` of field `var` in `form` (an `<x xmlns='jabber:x:data'/>`), if any.
pub fn value(form: &Element, var: &str) -> Option<String> {
    form.children()
        .find(|f| f.is("field", ns::DATA_FORMS) && f.get_attr("var") == Some(var))?
        .get_child("value", ns::DATA_FORMS)
        .map(Element::text_content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stanza::{parse_xml, reparse};

    #[test]
    fn submit_form_with_form_type() {
        let x = submit(
            ns::PUBSUB_PUBLISH_OPTIONS,
            &[("pubsub#access_model", "open"), ("pubsub#max_items", "max")],
        );
        assert_eq!(
            x.to_xml(ns::CLIENT),
            "<x xmlns='jabber:x:data' type='submit'>\
               <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
               <field var='pubsub#access_model'><value>open</value></field>\
               <field var='pubsub#max_items'><value>max</value></field>\
             </x>"
        );
        let back = reparse(&x);
        assert_eq!(
            value(&back, "FORM_TYPE").as_deref(),
            Some(ns::PUBSUB_PUBLISH_OPTIONS)
        );
        assert_eq!(value(&back, "pubsub#max_items").as_deref(), Some("max"));
    }

    #[test]
    fn reads_a_field_of_a_server_form() {
        // XEP-0060 §8.2.1, shortened.
        let form = parse_xml(
            "<x xmlns='jabber:x:data' type='form'>\
               <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#node_config</value></field>\
               <field var='pubsub#title' type='text-single' label='A friendly name for the node'/>\
               <field var='pubsub#access_model' type='list-single'>\
                 <option><value>open</value></option><value>presence</value>\
               </field>\
             </x>",
        );
        assert_eq!(
            value(&form, "pubsub#access_model").as_deref(),
            Some("presence")
        );
        assert_eq!(value(&form, "pubsub#title"), None);
        assert_eq!(value(&form, "pubsub#missing"), None);
    }
}
