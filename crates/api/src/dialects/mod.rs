//! One module per vendor dialect, each a thin translation onto the engine's command set:
//! `native` (`/api/v1`, our own), `sipgate` (`/v2`, `/login/...`), `jambonz` (`/v1/...`),
//! `ringcentral` (`/restapi/...`) and `api19` (`/call/2012-04-24/...`, RestComm). `api_key`
//! checks account API keys for the dialects that take them.

pub mod api19;
pub(crate) mod api_key;
pub mod jambonz;
pub mod native;
pub mod ringcentral;
pub mod sipgate;
