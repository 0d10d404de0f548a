"""URLs of the chat pages and API (included from config/urls.py)."""

urlpatterns = []
