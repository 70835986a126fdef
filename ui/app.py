"""Orchestra's Streamlit UI: ``orchestra ui`` (or ``streamlit run`` on this file) opens it on 127.0.0.1.

Four pages: Chat, Agents and models, Runs, Routers. The store is ``$ORCHESTRA_DB_URL`` (default: SQLite under
``~/.orchestra``); the team registered at start is ``$ORCHESTRA_UI_PROFILE`` (``default``: the offline team).
"""

from __future__ import annotations

import streamlit as st

from orchestra.ui import chat, registry_page, routers_page, runs

st.set_page_config(page_title="Orchestra", page_icon=":material/hub:", layout="wide")

# the default page is served at the app's root whatever its url_path says: it is declared there, and /chat
# (the address it had, in bookmarks and links) leads to it
chat_page = st.Page(chat.render, title="Chat", icon=":material/chat:", url_path="", default=True)


def _to_chat() -> None:
    st.switch_page(chat_page)


pages = [
    chat_page,
    st.Page(registry_page.render, title="Agents and models", icon=":material/extension:", url_path="agents"),
    st.Page(runs.render, title="Runs", icon=":material/account_tree:", url_path="runs"),
    st.Page(routers_page.render, title="Routers", icon=":material/insights:", url_path="routers"),
    st.Page(_to_chat, title="Chat", url_path="chat", visibility="hidden"),
]
st.navigation(pages).run()
