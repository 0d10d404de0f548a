"""URLs of the AI judges pages and API (included from config/urls.py)."""

urlpatterns = []
