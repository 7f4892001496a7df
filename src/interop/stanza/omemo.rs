//! TEMPORARY stand-in (replaced by the real wire module on merge).
#![allow(dead_code)]
use crate::interop::xml::Element;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encrypted { pub sid: u32, pub keys: Vec<KeyElement>, pub iv: Vec<u8>, pub payload: Option<Vec<u8>> }
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyElement { pub rid: u32, pub prekey: bool, pub data: Vec<u8> }
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceListPayload { pub devices: Vec<u32>, pub skipped: usize }
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle { pub signed_prekey_id: u32, pub signed_prekey_public: Vec<u8>, pub signed_prekey_signature: Vec<u8>, pub identity_key: Vec<u8>, pub prekeys: Vec<(u32, Vec<u8>)> }
pub fn bundle_node(device_id: u32) -> String { format!("eu.siacs.conversations.axolotl.bundles:{device_id}") }
pub fn _unused(_: Element) {}
