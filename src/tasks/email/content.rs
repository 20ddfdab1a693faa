//! A campaign's content: parsed and checked before anything is sent, then rendered into one
//! message per recipient.
//!
//! Templates use minijinja (Jinja syntax Django users know). A template that does not compile,
//! or that uses a variable a recipient lacks, is refused up front and the variable is named.
//! Every recipient's variables include `email` and `campaign_id`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use lettre::Message;
use lettre::message::dkim::DkimConfig;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use minijinja::{Environment, UndefinedBehavior};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::domain::ValidationError;

/// The template names, as minijinja knows them.
const SUBJECT: &str = "subject";
const TEXT: &str = "text";
const HTML: &str = "html";
const UNSUBSCRIBE: &str = "unsubscribe_url";

/// Variables every recipient has.
const BUILT_IN_VARIABLES: &[&str] = &["email", "campaign_id"];

/// A campaign's content as Django sends it: the public interface of `send_campaign`,
/// `send_email_batch` and `send_single_email` (see the README for every field).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContentArgs {
    /// The campaign's id, for the campaign header and templates.
    pub campaign_id: String,
    /// The sender, `Name <address>` or `address`.
    pub from: String,
    /// Where replies go.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// The subject template.
    pub subject: String,
    /// The plain text template.
    #[serde(default)]
    pub text: Option<String>,
    /// The HTML template.
    #[serde(default)]
    pub html: Option<String>,
    /// Extra headers, by name.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The unsubscribe URL template; adds List-Unsubscribe with one-click (RFC 8058).
    #[serde(default)]
    pub unsubscribe_url: Option<String>,
    /// The relay to send through (default: the workers' default relay).
    #[serde(default)]
    pub relay: Option<String>,
    /// How long a batch waits before retrying deferred recipients.
    #[serde(default)]
    pub retry_after_seconds: Option<u64>,
}

/// One recipient: an address and its template variables.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// The address.
    pub email: String,
    /// Its template variables.
    #[serde(default)]
    pub vars: Map<String, Value>,
}

impl Recipient {
    /// The key of this recipient's delivery record: the address, lower-cased.
    pub fn key(&self) -> String {
        self.email.trim().to_lowercase()
    }

    /// The rate key of this recipient's domain (`domain:gmail.com`), if the address has one.
    pub fn domain_key(&self) -> Option<String> {
        self.email
            .rsplit_once('@')
            .map(|(_, domain)| format!("domain:{}", domain.trim().to_lowercase()))
    }
}

/// Checked content, ready to render.
#[derive(Clone)]
pub struct Content {
    /// The campaign's id.
    pub campaign_id: String,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    headers: Vec<(HeaderName, String)>,
    environment: Arc<Environment<'static>>,
    has_text: bool,
    has_html: bool,
    has_unsubscribe: bool,
    variables: BTreeSet<String>,
    /// The relay named, if any.
    pub relay: Option<String>,
}

fn no_line_breaks(field: &str, value: &str) -> Result<(), ValidationError> {
    if value.contains(['\r', '\n']) {
        return Err(ValidationError::new(
            field,
            "contains a line break (CR or LF), which would inject headers",
        ));
    }
    Ok(())
}

fn mailbox(field: &str, text: &str) -> Result<Mailbox, ValidationError> {
    no_line_breaks(field, text)?;
    text.parse::<Mailbox>().map_err(|error| {
        ValidationError::new(field, format!("{text:?} is not an address: {error}"))
    })
}

impl Content {
    /// Checks content: addresses, header names and values, templates.
    pub fn parse(args: &ContentArgs) -> Result<Self, ValidationError> {
        no_line_breaks("campaign_id", &args.campaign_id)?;
        if args.campaign_id.is_empty() {
            return Err(ValidationError::new("campaign_id", "is required"));
        }
        let from = mailbox("from", &args.from)?;
        let reply_to = args
            .reply_to
            .as_deref()
            .map(|reply_to| mailbox("reply_to", reply_to))
            .transpose()?;
        let mut headers = Vec::new();
        for (name, value) in &args.headers {
            let field = format!("headers.{name}");
            no_line_breaks(&field, value)?;
            let header = HeaderName::new_from_ascii(name.clone()).map_err(|_| {
                ValidationError::new(&field, "is not a header name (ASCII letters, digits, '-')")
            })?;
            headers.push((header, value.clone()));
        }
        if args.text.is_none() && args.html.is_none() {
            return Err(ValidationError::new("text", "give text, html or both"));
        }
        let mut environment = Environment::new();
        environment.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut add = |name: &'static str,
                       source: &Option<String>|
         -> Result<bool, ValidationError> {
            let Some(source) = source else {
                return Ok(false);
            };
            environment
                .add_template_owned(name, source.clone())
                .map_err(|error| {
                    ValidationError::new(name, format!("the template does not compile: {error}"))
                })?;
            Ok(true)
        };
        add(SUBJECT, &Some(args.subject.clone()))?;
        let has_text = add(TEXT, &args.text)?;
        let has_html = add(HTML, &args.html)?;
        let has_unsubscribe = add(UNSUBSCRIBE, &args.unsubscribe_url)?;
        let mut variables = BTreeSet::new();
        for name in [SUBJECT, TEXT, HTML, UNSUBSCRIBE] {
            if let Ok(template) = environment.get_template(name) {
                variables.extend(template.undeclared_variables(false));
            }
        }
        Ok(Self {
            campaign_id: args.campaign_id.clone(),
            from,
            reply_to,
            headers,
            environment: Arc::new(environment),
            has_text,
            has_html,
            has_unsubscribe,
            variables,
            relay: args.relay.clone(),
        })
    }

    /// The variables the templates use that a recipient does not have.
    pub fn missing_variables(&self, recipient: &Recipient) -> Vec<String> {
        self.variables
            .iter()
            .filter(|name| {
                !BUILT_IN_VARIABLES.contains(&name.as_str()) && !recipient.vars.contains_key(*name)
            })
            .cloned()
            .collect()
    }

    fn render(&self, name: &str, context: &Value) -> Result<String, String> {
        self.environment
            .get_template(name)
            .and_then(|template| template.render(minijinja::value::Serde(context)))
            .map_err(|error| format!("{name}: {error}"))
    }

    /// The message for one recipient, signed when DKIM is configured. An error says why this
    /// recipient cannot be mailed (its address, its variables).
    pub fn message(
        &self,
        recipient: &Recipient,
        dkim: Option<&DkimConfig>,
    ) -> Result<(lettre::Address, Message), String> {
        let address: lettre::Address = recipient
            .email
            .trim()
            .parse()
            .map_err(|error| format!("{:?} is not an address: {error}", recipient.email))?;
        let missing = self.missing_variables(recipient);
        if !missing.is_empty() {
            return Err(format!(
                "undefined template variables: {}",
                missing.join(", ")
            ));
        }
        let mut context = recipient.vars.clone();
        context.insert(
            "email".to_owned(),
            Value::String(recipient.email.trim().to_owned()),
        );
        context.insert(
            "campaign_id".to_owned(),
            Value::String(self.campaign_id.clone()),
        );
        let context = Value::Object(context);
        let subject = self.render(SUBJECT, &context)?;
        if subject.contains(['\r', '\n']) {
            return Err("the rendered subject contains a line break".to_owned());
        }
        let domain = self.from.email.domain().to_owned();
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, address.clone()))
            .subject(subject)
            .message_id(Some(format!("<{}@{domain}>", uuid::Uuid::now_v7())))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Campaign-ID"),
                self.campaign_id.clone(),
            ));
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        for (name, value) in &self.headers {
            builder = builder.raw_header(HeaderValue::new(name.clone(), value.clone()));
        }
        if self.has_unsubscribe {
            let url = self.render(UNSUBSCRIBE, &context)?;
            if url.contains(['\r', '\n', '<', '>']) {
                return Err(
                    "the rendered unsubscribe URL contains a line break or angle bracket"
                        .to_owned(),
                );
            }
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{url}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
        }
        let message = match (self.has_text, self.has_html) {
            (true, true) => builder.multipart(MultiPart::alternative_plain_html(
                self.render(TEXT, &context)?,
                self.render(HTML, &context)?,
            )),
            (true, false) => builder.singlepart(SinglePart::plain(self.render(TEXT, &context)?)),
            _ => builder.singlepart(SinglePart::html(self.render(HTML, &context)?)),
        };
        let mut message = message.map_err(|error| format!("cannot build the message: {error}"))?;
        if let Some(dkim) = dkim {
            message.sign(dkim);
        }
        Ok((address, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ContentArgs {
        serde_json::from_value(serde_json::json!({
            "campaign_id": "c-42",
            "from": "News <news@example.com>",
            "subject": "Hi {{ name }}",
            "text": "Hello {{ name }}",
            "html": "<p>Hello {{ name }}</p>",
            "unsubscribe_url": "https://example.com/u?c={{ campaign_id }}&e={{ email }}",
        }))
        .unwrap()
    }

    fn recipient(email: &str, name: Option<&str>) -> Recipient {
        let mut vars = Map::new();
        if let Some(name) = name {
            vars.insert("name".to_owned(), Value::String(name.to_owned()));
        }
        Recipient {
            email: email.to_owned(),
            vars,
        }
    }

    #[test]
    fn renders_a_personal_message_with_one_click_unsubscribe() {
        let content = Content::parse(&args()).unwrap();
        let (address, message) = content
            .message(&recipient("anna@example.org", Some("Anna")), None)
            .unwrap();
        assert_eq!(address.to_string(), "anna@example.org");
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(text.contains("Subject: Hi Anna"), "{text}");
        assert!(text.contains("Hello Anna"));
        assert!(
            text.contains("List-Unsubscribe: <https://example.com/u?c=c-42&e=anna@example.org>")
        );
        assert!(text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
        assert!(text.contains("X-Campaign-ID: c-42"));
    }

    #[test]
    fn missing_variables_are_named() {
        let content = Content::parse(&args()).unwrap();
        assert_eq!(
            content.missing_variables(&recipient("a@b.c", None)),
            ["name"]
        );
        let error = content
            .message(&recipient("a@b.c", None), None)
            .unwrap_err();
        assert!(error.contains("name"), "{error}");
    }

    #[test]
    fn header_injection_and_broken_templates_are_refused_by_field() {
        let mut bad = args();
        bad.from = "News <news@example.com>\r\nBcc: everyone@example.com".to_owned();
        assert_eq!(Content::parse(&bad).err().unwrap().field, "from");
        let mut bad = args();
        bad.headers.insert("X-Tag".to_owned(), "a\nb".to_owned());
        assert_eq!(Content::parse(&bad).err().unwrap().field, "headers.X-Tag");
        let mut bad = args();
        bad.subject = "Hi {{ name".to_owned();
        assert_eq!(Content::parse(&bad).err().unwrap().field, "subject");
    }

    #[test]
    fn a_bad_address_fails_only_its_recipient() {
        let content = Content::parse(&args()).unwrap();
        let error = content
            .message(&recipient("not an address", Some("X")), None)
            .unwrap_err();
        assert!(error.contains("not an address"), "{error}");
    }
}
