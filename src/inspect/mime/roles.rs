//! The tree walk that gives every part its [`PartRole`]: which parts are the message text a
//! reader sees (markings.md §(d)1: both sides of multipart/alternative, the root of
//! multipart/related, the first body part of multipart/mixed), which are attachments, forwarded
//! messages, signatures, and which signed or encrypted structures lie on the text path.
//!
//! Must not: decode any body or look for markers (that is the text pass in `text`).

use mail_parser::PartType;

use super::{Diagnostic, MimeShape, PartRole, Security, unbracket};

/// The walk's context: is this part on the path of the message text?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// A candidate for message text.
    Body,
    /// Message text under multipart/signed: read, never edit.
    Signed,
    /// An attachment or anything below one.
    Other,
    /// A multipart/related resource.
    Related,
    /// The signature part of multipart/signed.
    Signature,
}

/// Walk the tree from the root, iteratively (hostile nesting must not overflow the stack),
/// setting each part's parent, depth and role, and filling the shape's lists of text parts,
/// attachments, forwarded messages and security structures.
pub(super) fn assign(shape: &mut MimeShape, message: &mail_parser::Message<'_>) {
    let mut stack: Vec<(usize, Ctx, Option<usize>, usize)> = vec![(0, Ctx::Body, None, 0)];
    let mut visited = vec![false; message.parts.len()];
    while let Some((id, ctx, parent, depth)) = stack.pop() {
        if id >= message.parts.len() || visited[id] {
            continue;
        }
        visited[id] = true;
        shape.parts[id].parent = parent;
        shape.parts[id].depth = depth;
        let children: Vec<usize> = match &message.parts[id].body {
            PartType::Multipart(ids) => ids
                .iter()
                .map(|&c| c as usize)
                .filter(|&c| c > id && c < message.parts.len())
                .collect(),
            _ => Vec::new(),
        };
        let ct = shape.parts[id].content_type.clone();
        let is_multipart = matches!(message.parts[id].body, PartType::Multipart(_));
        if ct.starts_with("multipart/") && !is_multipart {
            shape.diagnostics.push(Diagnostic {
                part: Some(id),
                code: "multipart-without-boundary",
                detail: format!("{ct} without a usable boundary; treated as opaque"),
            });
        }
        let roles = if is_multipart {
            shape.parts[id].role = PartRole::Container;
            container_child_contexts(shape, id, &ct, ctx, &children)
        } else {
            shape.parts[id].role = leaf_role(shape, id, &ct, ctx);
            Vec::new()
        };
        // Push in reverse so children are visited in document order.
        for (child, child_ctx) in roles.into_iter().rev() {
            stack.push((child, child_ctx, Some(id), depth + 1));
        }
    }
}

fn container_child_contexts(
    shape: &mut MimeShape,
    id: usize,
    ct: &str,
    ctx: Ctx,
    children: &[usize],
) -> Vec<(usize, Ctx)> {
    let readable = matches!(ctx, Ctx::Body | Ctx::Signed);
    let subtype = ct.strip_prefix("multipart/").unwrap_or("");
    if readable && subtype == "signed" {
        let protocol = shape_param(shape, id, "protocol").unwrap_or_default();
        shape
            .security
            .push(Security::MultipartSigned { part: id, protocol });
        return children
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, if i == 0 { Ctx::Signed } else { Ctx::Signature }))
            .collect();
    }
    if readable && subtype == "encrypted" {
        shape
            .security
            .push(Security::MultipartEncrypted { part: id });
        return children.iter().map(|&c| (c, Ctx::Other)).collect();
    }
    if !readable {
        let child_ctx = if ctx == Ctx::Related {
            Ctx::Related
        } else {
            Ctx::Other
        };
        return children.iter().map(|&c| (c, child_ctx)).collect();
    }
    match subtype {
        "alternative" => children.iter().map(|&c| (c, ctx)).collect(),
        "related" => {
            // The root is the part named by `start`, else the first (RFC 2387).
            let start = shape_param(shape, id, "start");
            let root = start
                .and_then(|s| {
                    let s = unbracket(&s);
                    children
                        .iter()
                        .copied()
                        .find(|&c| shape.parts[c].content_id.as_deref() == Some(s))
                })
                .or_else(|| children.first().copied());
            children
                .iter()
                .map(|&c| (c, if Some(c) == root { ctx } else { Ctx::Related }))
                .collect()
        }
        "digest" => children.iter().map(|&c| (c, Ctx::Other)).collect(),
        _ => {
            // mixed, report and unknown subtypes: the first body-like part is the text.
            let body = children.iter().copied().find(|&c| {
                let p = &shape.parts[c];
                !p.is_attachment_disposition
                    && (p.content_type == "text/plain"
                        || p.content_type == "text/html"
                        || p.content_type.starts_with("multipart/")
                        || is_pkcs7_mime(&p.content_type))
            });
            children
                .iter()
                .map(|&c| (c, if Some(c) == body { ctx } else { Ctx::Other }))
                .collect()
        }
    }
}

fn leaf_role(shape: &mut MimeShape, id: usize, ct: &str, ctx: Ctx) -> PartRole {
    let part = &shape.parts[id];
    let is_text = ct == "text/plain" || ct == "text/html";
    if ct == "message/rfc822" || ct == "message/global" {
        shape.rfc822_parts.push(id);
        return PartRole::Rfc822;
    }
    let role = match ctx {
        Ctx::Body if is_text && !part.is_attachment_disposition => {
            shape.text_parts.push(id);
            return PartRole::BodyText;
        }
        Ctx::Signed if is_text && !part.is_attachment_disposition => {
            shape.signed_text_parts.push(id);
            return PartRole::SignedText;
        }
        Ctx::Body | Ctx::Signed if is_pkcs7_mime(ct) => {
            let smime_type = shape_param(shape, id, "smime-type")
                .map(|s| s.to_ascii_lowercase())
                .unwrap_or_default();
            if smime_type == "signed-data" {
                shape
                    .security
                    .push(Security::SmimeOpaqueSigned { part: id });
            } else {
                shape.security.push(Security::SmimeEncrypted { part: id });
            }
            PartRole::Protected
        }
        Ctx::Related => PartRole::RelatedResource,
        Ctx::Signature => PartRole::Signature,
        _ => PartRole::Attachment,
    };
    shape.attachments.push(id);
    role
}

fn is_pkcs7_mime(ct: &str) -> bool {
    ct == "application/pkcs7-mime" || ct == "application/x-pkcs7-mime"
}

/// A Content-Type parameter of part `id` (names are lowercase).
fn shape_param(shape: &MimeShape, id: usize, name: &str) -> Option<String> {
    shape.parts[id]
        .params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}
