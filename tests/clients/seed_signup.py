# The Python example of the public signup page (shared/seed/api-auth-signup.txt),
# verbatim. tests/clients/run.sh swaps in the local base URL, and a real email
# address for "[email protected]", the page host's email-obfuscation stand-in.
import requests

response = requests.post(
    "https://api.kaggleingest.com/api/auth/signup",
    json={
        "email": "[email protected]",
        "password": "securepassword123"
    }
)

data = response.json()
api_key = data["api_key"]
print(f"Your API key: {api_key}")
